"""``unitune export --push-to-hub REPO``: the export and its card uploaded to a model repo on the
Hugging Face hub, through huggingface_hub (its token: ``hf auth login`` or HF_TOKEN; its address:
HF_ENDPOINT). A folder export becomes the repo's root; a file export goes up with the files
written beside it (its card and the card's images), as one commit."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def push(repo: str, path: Path, files: list[Path], private: bool = True) -> str:
    """Upload; returns the repo's address. Any hub error is one line."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    root = path if path.is_dir() else path.parent
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if path.is_dir():
            api.upload_folder(repo_id=repo, folder_path=str(path), commit_message="unitune export")
        else:
            ops = [
                CommitOperationAdd(path_in_repo=f.relative_to(root).as_posix(), path_or_fileobj=f)
                for f in files
            ]
            api.create_commit(repo, ops, commit_message="unitune export")
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise UserError(
            f"--push-to-hub {repo}: the upload failed "
            f"({type(e).__name__}: {' '.join(str(e).split())[:200]})",
            "check `hf auth whoami` and the repo name; the export itself is written",
        ) from None
    return str(url)
