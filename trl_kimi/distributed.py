"""The end of a multi-process run (`accelerate launch`, `torchrun`): tearing the process group down without a hang."""

import gc

import torch
from transformers import Trainer


def end_training(trainer: Trainer) -> None:
    """
    Destroy the process group at the end of a multi-process script, in the one order that cannot hang or abort.

    Left to the interpreter's exit, gloo's worker threads can still hold a finished collective's tensors while Python
    is torn down, and a rank aborts ("terminate called without an active exception", exit -6). Destroyed with
    `accelerator.end_training()` alone, the group stays alive inside DDP's Reducer; when the Reducer is freed later
    (a pybind11 object freed with the GIL held), the group's destructor joins worker threads that may be waiting for
    the GIL to free such tensors: a deadlock, seen once in about ten 2-process CPU runs (pytorch/pytorch#56297). So
    every reference to the wrapped model is dropped first, while the group is still registered, and only then is the
    group destroyed: its own Python binding releases the GIL while it is freed.

    The trainer stays usable for single-process work afterwards (`trainer.model` is the unwrapped model). A no-op
    teardown of nothing when no process group was started.

    Example:

    ```python
    trainer.train()
    trainer.save_model()
    end_training(trainer)  # the last call of a script launched on several processes
    ```
    """
    trainer.model_wrapped = trainer.model  # the DDP / FSDP / DeepSpeed wrapper and, with it, the Reducer
    trainer.accelerator.free_memory()  # the accelerator's own references to the prepared model and optimizer
    gc.collect()
    trainer.accelerator.end_training()  # trackers, then torch.distributed.destroy_process_group()


def wrapped_models_alive() -> int:
    """How many `DistributedDataParallel` objects are still reachable (0 after [`end_training`]); for tests."""
    gc.collect()
    return sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
