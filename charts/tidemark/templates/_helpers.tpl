{{/* Full name of the release's objects. */}}
{{- define "tidemark.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "tidemark.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tidemark.serviceAccountName" -}}
{{- default (include "tidemark.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The one image of the release: the operator's, and the storage pods' by default. */}}
{{- define "tidemark.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The namespaces the operator watches (a PodMonitor's namespaceSelector). */}}
{{- define "tidemark.namespaceSelector" -}}
{{- if .Values.operator.watchAllNamespaces -}}
any: true
{{- else -}}
matchNames:
{{- range (default (list .Release.Namespace) .Values.operator.watchNamespaces) }}
- {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* True when the cluster serves the Prometheus Operator's KIND (monitoring.coreos.com/v1). */}}
{{- define "tidemark.hasMonitoringAPI" -}}
{{- if .root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind) -}}true{{- end -}}
{{- end -}}
