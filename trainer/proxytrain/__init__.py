"""proxytrain: PyTorch data loading for proxycomp output (no dependency on the service).

    from proxytrain import DatasetConfig, ProxyLoader, labels, attention_mask
    loader = ProxyLoader(DatasetConfig(urls=["s3://bucket/out/shards/"], seq_len=2048), batch_size=8, num_workers=4)
    for batch in loader:      # tokens, doc_ids, position_ids: [8, 2048]; step: [8]
        ...
    ckpt["data"] = loader.state_dict()   # later: loader.load_state_dict(ckpt["data"])
"""

from .config import DatasetConfig, MixConfig
from .loader import ProxyDataset, ProxyLoader
from .masks import attention_mask, cu_seqlens, labels, position_ids
from .source import Unit, list_units, read_metadata
from .stream import ProxyStream, Sample
from .vocab import Layout, View, Vocab

__all__ = [
    "DatasetConfig", "Layout", "MixConfig", "ProxyDataset", "ProxyLoader", "ProxyStream", "Sample", "Unit", "View",
    "Vocab", "attention_mask", "cu_seqlens", "labels", "list_units", "position_ids", "read_metadata",
]
