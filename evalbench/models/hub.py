"""Hub files as a download would resolve them now: the commit, and the identity of the content.

Model fingerprints (part of every cache key and record) use this, so that a hub model is keyed by
what is actually loaded, never by a branch name such as ``main`` that moves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from evalbench.hub import hub_offline
from evalbench.models.checkpoint import file_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repository: the commit it was resolved at, and ``content``, its etag
    (the sha256 of an LFS file, the git blob id of a small one), which is also the name of its blob
    in the local cache; a digest of the bytes where the cache keeps no blobs."""

    repo_id: str
    filename: str
    commit: str
    content: str



def resolve_file(repo_id: str, filename: str, revision: str | None = None) -> HubFile | None:
    """``filename`` of ``repo_id`` at ``revision`` (default: the main branch) as a download would
    resolve it: online, from the hub's answer to a HEAD request (nothing is downloaded); offline,
    or when the hub cannot be reached, from the local Hugging Face cache (what a download would
    then fall back to). None when the hub says the file does not exist, or neither knows it."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    if not hub_offline():
        try:
            url = huggingface_hub.hf_hub_url(repo_id, filename, revision=revision)
            meta = huggingface_hub.get_hf_file_metadata(url)
        except EntryNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - no network, a gated repo: the cache decides, as for a download
            log.debug("%s/%s: the hub did not answer (%s); looking in the local cache", repo_id, filename, e)
        else:
            if meta.commit_hash and meta.etag:
                return HubFile(repo_id, filename, meta.commit_hash, meta.etag)
    found = huggingface_hub.try_to_load_from_cache(repo_id, filename, revision=revision)
    if not isinstance(found, str):
        return None
    path = Path(found)
    # <cache>/models--org--name/snapshots/<commit>/<filename>, a link to ../../blobs/<etag>
    snapshots = max(i for i, part in enumerate(path.parts) if part == "snapshots")
    commit = path.parts[snapshots + 1]
    target = path.resolve()
    content = target.name if target.parent.name == "blobs" else f"sha256:{file_digest(path)}"
    return HubFile(repo_id, filename, commit, content)
