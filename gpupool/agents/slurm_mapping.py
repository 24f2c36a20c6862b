"""The Slurm mapping file: which partition takes each pool and which GRES each GPU type is.

    # site Guiyang's Slurm
    partitions:             # pool -> partition
      gy-910b: ascend
      gy-a100: gpu
    gres:                   # GPU type -> the GRES a job asks for, per node (name:type)
      Ascend-910B: gpu:910b
      A100-80G: gpu:a100
    completion_log: /var/log/slurm/jobcomp.log   # optional: JobCompType=jobcomp/filetxt

Every value reaches ``sbatch``'s command line, so names are restricted to Slurm's own
characters; every problem is reported as ``file:line field: message``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gpupool import located_yaml
from gpupool.files import SLURM_MAPPING, FileError

SECTIONS = ("partitions", "gres", "completion_log")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}")


@dataclass(frozen=True)
class SlurmMapping:
    partitions: dict[str, str] = field(default_factory=dict)  # pool -> partition
    gres: dict[str, str] = field(default_factory=dict)  # GPU type -> "gpu:type"
    completion_log: Path | None = None
    source: str = "<mapping>"

    def partition(self, pool: str) -> str:
        if pool not in self.partitions:
            raise FileError(f"no partition for pool {pool!r}", location=f"{self.source} partitions")
        return self.partitions[pool]


def load_mapping(path: str | Path) -> SlurmMapping:
    source = str(path)
    root = located_yaml.load(path, SLURM_MAPPING, source)
    if not isinstance(root, yaml.MappingNode):
        raise FileError("must be a mapping of partitions and gres", location=f"{source}:1")
    sections = {key.value: (key, value) for key, value in root.value}
    for name, (key, _) in sections.items():
        if name not in SECTIONS:
            raise FileError(_unknown(name), location=located_yaml.where(source, key, name))
    return SlurmMapping(
        partitions=_names(sections.get("partitions"), source, "partitions"),
        gres=_names(sections.get("gres"), source, "gres"),
        completion_log=_path(sections.get("completion_log"), source),
        source=source,
    )


def _names(section, source: str, path: str) -> dict[str, str]:
    if section is None:
        return {}
    key_node, node = section
    if not isinstance(node, yaml.MappingNode):
        raise FileError(
            "must be a mapping of names", location=located_yaml.where(source, key_node, path)
        )
    found = {}
    for key, value in node.value:
        where = located_yaml.where(source, key, located_yaml.join(path, key.value))
        if not isinstance(value, yaml.ScalarNode) or not _NAME.fullmatch(str(value.value)):
            raise FileError(
                "must be a Slurm name (letters, digits and _.:+-, at most 128)", location=where
            )
        found[str(key.value)] = str(value.value)
    return found


def _path(section, source: str) -> Path | None:
    if section is None:
        return None
    key_node, node = section
    if not isinstance(node, yaml.ScalarNode) or not str(node.value).startswith("/"):
        raise FileError(
            "must be an absolute file path",
            location=located_yaml.where(source, key_node, "completion_log"),
        )
    return Path(node.value)


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, SECTIONS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(SECTIONS)})"
    return f"unknown section{hint}"
