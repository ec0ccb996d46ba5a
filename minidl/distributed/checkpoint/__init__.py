"""torch.distributed.checkpoint ("DCP"): save and load state dicts of data-parallel and
sharded (FSDP) training, each rank writing only what it holds, loading on any number of ranks.

    import minidl.distributed.checkpoint as dcp
    from minidl.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)         # plain, DDP or FSDP model
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id="ckpt/step100")

    model_sd, optim_sd = get_state_dict(model, opt)         # on resume: the same, then
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id="ckpt/step100")           # filled in place
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])

The checkpoint is a directory in minidl's own format (not torch's .distcp): see
minidl.distributed.checkpoint.filesystem."""
from .filesystem import FileSystemReader, FileSystemWriter
from .metadata import (BytesStorageMetadata, ChunkStorageMetadata, FlatShard, Metadata,
                       TensorStorageMetadata)
from .planner import DefaultLoadPlanner, DefaultSavePlanner, LoadPlanner, SavePlanner
from .state_dict_loader import load, load_state_dict
from .state_dict_saver import async_save, save, save_state_dict

__all__ = ["save", "load", "async_save", "save_state_dict", "load_state_dict",
           "FileSystemWriter", "FileSystemReader", "DefaultSavePlanner", "DefaultLoadPlanner",
           "SavePlanner", "LoadPlanner", "Metadata", "TensorStorageMetadata",
           "BytesStorageMetadata", "ChunkStorageMetadata", "FlatShard"]
