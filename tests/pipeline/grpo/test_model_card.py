"""The model card and the hub upload of a finished run (up to the upload call: no hub is reachable here)."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub.utils import validate_repo_id

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.model_card import publish


class RecordingHub:
    """huggingface_hub.HfApi's two calls that publish uses, recorded instead of sent (or failing, like a hub
    that cannot be reached)."""

    calls: list = []
    fail = False

    def create_repo(self, repo_id, private=False, exist_ok=False):
        if self.fail:
            raise ConnectionError("hub unreachable")
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

    def upload_folder(self, folder_path, repo_id, commit_message):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        self.calls.append(("upload_folder", folder_path, repo_id, files, commit_message))


def finished_run(tmp_path, **grpo_options):
    run = tmp_path / "my-run"
    (run / "merged").mkdir(parents=True)
    (run / "merged" / "model.safetensors").write_bytes(b"weights")
    args = GRPOArguments(output_dir=str(run), **grpo_options)
    (run / "config.json").write_text(json.dumps({"grpo": args.to_dict(), "model": ModelArguments().to_dict(),
                                                 "data": DataArguments().to_dict()}))
    return SimpleNamespace(args=args, run_dir=run, step=7)


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub

    RecordingHub.calls, RecordingHub.fail = [], False
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHub)
    return RecordingHub


def test_push_to_hub_uploads_the_merged_model_with_its_card_and_config(tmp_path, hub):
    state = finished_run(tmp_path, push_to_hub=True, hub_private_repo=True, resume_from_checkpoint="latest")
    summary = {"steps": 7}
    publish(state, state.run_dir / "merged", summary)
    merged = state.run_dir / "merged"
    assert hub.calls == [("create_repo", "my-run", True, True),
                         ("upload_folder", str(merged), "my-run", ["README.md", "grpo_config.yaml", "model.safetensors"],
                          "grpo-pipeline: GRPO, step 7")]
    assert summary["hub_url"] == "https://huggingface.co/my-run"
    card = (merged / "README.md").read_text()
    assert "Not evaluated in this run" in card
    # the embedded model and bundled GSM8K are named by their hub ids, which the hub validates on upload
    metadata = yaml.safe_load(card.split("---")[1])
    assert (metadata["base_model"], metadata["datasets"]) == ("HuggingFaceTB/SmolLM2-135M-Instruct", ["openai/gsm8k"])
    for repo_id in (metadata["base_model"], *metadata["datasets"]):
        validate_repo_id(repo_id)  # raises on an id the hub would refuse
    config = yaml.safe_load((merged / "grpo_config.yaml").read_text())
    assert (config["push_to_hub"], config["resume_from_checkpoint"]) == (False, None)  # a re-run does not upload


def test_a_failed_upload_keeps_the_run_and_says_how_to_retry(tmp_path, hub, caplog):
    hub.fail = True
    state = finished_run(tmp_path, push_to_hub=True, hub_model_id="me/model")
    summary = {"steps": 7}
    with caplog.at_level(logging.ERROR):
        publish(state, state.run_dir / "merged", summary)
    assert summary["hub_url"] is None and hub.calls == []
    merged = state.run_dir / "merged"
    assert f"Retry with: hf upload me/model {merged}" in caplog.text
    assert (merged / "README.md").is_file()


def test_no_push_without_push_to_hub(tmp_path, hub):
    state = finished_run(tmp_path)
    publish(state, state.run_dir / "merged", {"steps": 7})
    assert hub.calls == [] and (state.run_dir / "merged" / "README.md").is_file()
