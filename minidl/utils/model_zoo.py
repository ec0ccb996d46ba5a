"""``torch.utils.model_zoo``'s old name for ``hub.load_state_dict_from_url``: ``load_url(url)``
reads the file from torch.hub's cache (minidl never downloads; see ``minidl.hub``)."""
from ..hub import load_state_dict_from_url as load_url

__all__ = ["load_url"]
