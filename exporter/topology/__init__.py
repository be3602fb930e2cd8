"""Which vLLM instances run here, on which GPUs, serving which model: static, /proc and Kubernetes."""
