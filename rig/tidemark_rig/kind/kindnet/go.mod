module tidemark.local/kindnet

go 1.26.0
