// tidemark-kindnet: the pod network of Tidemark's offline kind clusters.
//
// kind's own CNI daemon (kindnetd) cannot be fetched without a registry, so this small
// stand-in runs as a host-network DaemonSet under kind's default-cni manifest. On each
// node it writes a ptp + host-local CNI config for the node's spec.podCIDR and keeps a
// route to every other node's podCIDR via that node's InternalIP.
//
// It talks to the API server with its service account's token, at the address in the
// node's kubelet.conf: the 10.96.0.1 ClusterIP is not routable before kube-proxy has
// programmed it, and a call to it would leave the machine. (The kubelet's own
// credentials may not list nodes.)
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// apiServer reads the `server:` line of a kubelet.conf (machine-written YAML, one key per
// line, so no YAML library is needed).
func apiServer(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if key, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok && key == "server" {
			return strings.TrimSpace(value), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s: no server line", path)
}

type authed struct {
	token string
	next  http.RoundTripper
}

func (a authed) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+a.token)
	return a.next.RoundTrip(r)
}

func client() (*http.Client, error) {
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("ca.crt: no certificate")
	}
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	return &http.Client{Transport: authed{strings.TrimSpace(string(token)), tr}, Timeout: 10 * time.Second}, nil
}

type nodeList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			PodCIDR string `json:"podCIDR"`
		} `json:"spec"`
		Status struct {
			Addresses []struct {
				Type    string `json:"type"`
				Address string `json:"address"`
			} `json:"addresses"`
		} `json:"status"`
	} `json:"items"`
}

const conflistTemplate = `{
  "cniVersion": "1.0.0",
  "name": "kindnet",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "routes": [{"dst": "0.0.0.0/0"}],
        "ranges": [[{"subnet": "%s"}]]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

// writeIfChanged replaces path atomically, so the kubelet never reads half a config.
func writeIfChanged(path, content string) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == content {
		return nil
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	log.Printf("writing %s", path)
	return os.Rename(tmp, path)
}

func sync(c *http.Client, server, self, cniDir string) error {
	resp, err := c.Get(server + "/api/v1/nodes")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("list nodes: HTTP %d", resp.StatusCode)
	}
	var nodes nodeList
	if err := json.NewDecoder(resp.Body).Decode(&nodes); err != nil {
		return err
	}
	for _, n := range nodes.Items {
		if n.Spec.PodCIDR == "" {
			continue
		}
		if n.Metadata.Name == self {
			conf := fmt.Sprintf(conflistTemplate, n.Spec.PodCIDR)
			if err := writeIfChanged(filepath.Join(cniDir, "10-kindnet.conflist"), conf); err != nil {
				return err
			}
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type != "InternalIP" || strings.Contains(a.Address, ":") {
				continue
			}
			out, err := exec.Command("ip", "route", "replace", n.Spec.PodCIDR, "via", a.Address).CombinedOutput()
			if err != nil {
				return fmt.Errorf("route %s via %s: %v: %s", n.Spec.PodCIDR, a.Address, err, out)
			}
		}
	}
	return nil
}

func main() {
	self := os.Getenv("NODE_NAME")
	kubeconfigPath := envOr("KUBELET_KUBECONFIG", "/etc/kubernetes/kubelet.conf")
	cniDir := envOr("CNI_CONFIG_DIR", "/etc/cni/net.d")
	if self == "" {
		log.Fatal("NODE_NAME is not set")
	}
	for {
		// Re-read the token every round: projected tokens are rotated.
		err := func() error {
			server, err := apiServer(kubeconfigPath)
			if err != nil {
				return err
			}
			c, err := client()
			if err != nil {
				return err
			}
			return sync(c, server, self, cniDir)
		}()
		if err != nil {
			log.Printf("sync: %v", err)
		}
		time.Sleep(5 * time.Second)
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
