"""GPUs through NVML: the device reader, the sampler, XID events, the gpu_* collector, and the NVML fake."""
