"""A simulated GPU node serving vLLM, for the demo, the tests and the benchmarks.

The core is pure and stepped by a clock it is given (`Simulation.advance_to(t)`): tenants' arrivals
(`workload`), one continuous-batching engine per vLLM instance (`engine`, `kv`), GPU power and clocks (`power`),
the vLLM-format /metrics (`metrics`) and OTLP spans (`spans`) each instance would produce, and the ground truth
of energy per request (`ledger`). Around it, `node.SimNode` runs it in real time with real sockets (each
instance's /metrics and /health through `vllm_server`) and an NVML that follows the load (`nvml.SimulatedNvml`,
on `exporter.gpu.fake_nvml`); `scenarios` names what can happen.

    from exporter.sim import NodeOptions, NodeSpec, SimNode, scenario
    node = SimNode(NodeSpec(), scenario("latency_regression", at=30), NodeOptions(otlp_endpoint="127.0.0.1:4317"))
    await node.start()                      # /metrics per instance on loopback, spans over OTLP/gRPC
    exporter = Exporter(load_settings({"instances": node.instance_configs()}), nvml=node.nvml)
    ...
    truth = node.ledger.by_span()           # trace id + span id -> RequestTruth (joules, GPU-seconds)
    await node.stop()
"""

from exporter.sim.ledger import Ledger, RequestTruth
from exporter.sim.node import NodeOptions, NodeStartError, SimNode
from exporter.sim.nvml import SimulatedNvml
from exporter.sim.scenarios import SCENARIOS, Scenario, scenario
from exporter.sim.simulation import Simulation
from exporter.sim.spec import LLAMA_8B, LLAMA_70B_FP8, ModelSpec, NodeSpec

__all__ = [
    "LLAMA_8B",
    "LLAMA_70B_FP8",
    "SCENARIOS",
    "Ledger",
    "ModelSpec",
    "NodeOptions",
    "NodeSpec",
    "NodeStartError",
    "RequestTruth",
    "Scenario",
    "SimNode",
    "SimulatedNvml",
    "Simulation",
    "scenario",
]
