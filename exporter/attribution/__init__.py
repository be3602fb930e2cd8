"""Who used the GPU: the pure attributor, the stage feeding it, its collector, the span forwarder."""
