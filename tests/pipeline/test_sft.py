import json
import math

import pytest
import torch
from safetensors.torch import load_file

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.data import get_template, load_gsm8k, render_prompt, split_stages
from pipeline.data.sources import stage_examples
from pipeline.models import add_lora, load_model, load_tokenizer
from pipeline.sft import SFTScriptArguments, build_sft_dataset, make_trainer, run_sft


def sft_config(output_dir, **overrides):
    from trl import SFTConfig

    values = dict(
        output_dir=str(output_dir), max_steps=8, per_device_train_batch_size=4, learning_rate=1e-2,
        lr_scheduler_type="constant", logging_steps=1, save_steps=4, bf16=False, use_cpu=True,
        gradient_checkpointing=False, report_to="none", max_length=512, seed=0, disable_tqdm=True,
    )
    values.update(overrides)
    return SFTConfig(**values)


def lora_args(path, **overrides):
    return ModelArguments(model_name_or_path=str(path), use_peft=True, lora_r=4, lora_alpha=8,
                          lora_dropout=0.0, **overrides)


DATA = DataArguments(max_train_samples=4, grpo_holdout_size=1000)


def test_sft_and_grpo_parts_are_disjoint_and_seeded():
    train = load_gsm8k(split="train").examples
    sft, grpo = split_stages(train, 1000, seed=1234)
    assert len(grpo) == 1000 and len(sft) == 6473
    assert {e.source for e in sft}.isdisjoint(e.source for e in grpo)
    assert split_stages(train, 1000, seed=1234) == (sft, grpo)
    assert split_stages(train, 1000, seed=1)[1] != grpo
    sft_part, _, record = stage_examples(DataArguments(max_train_samples=3), "sft")
    assert record["sources"] == [e.source for e in sft_part] and len(sft_part) == 3
    grpo_part, _, _ = stage_examples(DataArguments(), "grpo")  # bundled GSM8K: 1000 kept for GRPO by default
    assert {e.source for e in grpo_part} == {e.source for e in grpo}


def test_training_rows_are_gsm8k_reasoning_in_the_shared_template():
    example = load_gsm8k(split="train").examples[0]
    row = build_sft_dataset([example], get_template("reasoning"))[0]
    assert row["prompt"][1] == {"role": "user", "content": example.question}
    completion = row["completion"][0]["content"]
    assert completion == get_template("reasoning").completion(example.reasoning, example.answer)
    assert "<<" not in completion and completion.endswith("<answer>\n72\n</answer>")


def test_lora_sft_learns_masks_the_prompt_and_changes_only_adapters(tiny_model_dir, tmp_path):
    model_args = lora_args(tiny_model_dir)
    tokenizer = load_tokenizer(model_args, padding_side="right")
    model = add_lora(load_model(model_args), model_args)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    examples, _, _ = stage_examples(DATA, "sft")
    dataset = build_sft_dataset(examples, get_template("reasoning"))
    trainer = make_trainer(model, tokenizer, dataset, sft_config(tmp_path))

    # Prompt tokens carry no loss; the completion, through its closing EOS, does.
    row = trainer.train_dataset[0]
    batch = trainer.data_collator([row])
    prompt_ids = tokenizer(render_prompt(tokenizer, dataset[0]["prompt"]), add_special_tokens=False).input_ids
    labels, input_ids = batch["labels"][0], batch["input_ids"][0]
    assert input_ids[: len(prompt_ids)].tolist() == list(prompt_ids)
    assert (labels[: len(prompt_ids)] == -100).all()
    completion_labels = labels[len(prompt_ids):]
    assert (completion_labels != -100).all() and torch.equal(completion_labels, input_ids[len(prompt_ids):])
    if input_ids.shape[0] < 512:  # not truncated: the EOS that ends the answer is trained
        assert tokenizer.eos_token_id in completion_labels.tolist()

    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    # The same 4 examples every step and no dropout: any fall is learning, not noise.
    assert losses[-1] < losses[0] - 0.2, losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 6, losses
    assert any("train_tokens_per_second" in h for h in trainer.state.log_history)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)


def test_run_sft_writes_adapter_and_a_merged_folder_equal_to_base_plus_adapter(tiny_model_dir, tmp_path):
    from peft import PeftModel

    model_args = lora_args(tiny_model_dir)
    summary = run_sft(SFTScriptArguments(eval_limit=0), sft_config(tmp_path, max_steps=3), model_args, DATA)
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    assert summary["output"] == {"adapter": str(adapter), "merged": str(merged)}
    assert all("lora_" in k for k in load_file(adapter / "adapter_model.safetensors"))
    split = json.loads((tmp_path / "data_split.json").read_text())
    assert split["used"] == 4 and split["stage"] == "sft"

    ids = torch.tensor([[3, 50, 120, 7, 99, 200]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(load_model(ModelArguments(model_name_or_path=str(tiny_model_dir))),
                                             str(adapter))(input_ids=ids).logits
        got = load_model(ModelArguments(model_name_or_path=str(merged)))(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    base = load_model(ModelArguments(model_name_or_path=str(tiny_model_dir)))
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, expected)  # training did change the policy
    assert (merged / "tokenizer_config.json").is_file()


def test_resume_from_checkpoint_matches_an_unbroken_run(tiny_model_dir, tmp_path):
    """Stop after step 2 (its checkpoint saved), resume 'latest' to step 4: same adapter as 4 steps straight."""
    from transformers import TrainerCallback

    class StopAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_save = True
                control.should_training_stop = True

    model_args = lora_args(tiny_model_dir, )
    model_args.lora_dropout = 0.1  # dropout draws random numbers: the resumed RNG state must match too
    examples, _, _ = stage_examples(DataArguments(max_train_samples=8), "sft")
    dataset = build_sft_dataset(examples, get_template("reasoning"))

    def train(output_dir, resume=None, stop=False):
        torch.manual_seed(0)
        tokenizer = load_tokenizer(model_args, padding_side="right")
        model = add_lora(load_model(model_args), model_args)
        trainer = make_trainer(model, tokenizer, dataset, sft_config(output_dir, max_steps=4, save_steps=100,
                                                                     per_device_train_batch_size=2))
        if stop:
            trainer.add_callback(StopAtStep())
        trainer.train(resume_from_checkpoint=resume)
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}, trainer.state.global_step

    straight, steps = train(tmp_path / "straight")
    _, stopped_at = train(tmp_path / "broken", stop=True)
    from pipeline.sft import resolve_resume

    latest = resolve_resume("latest", str(tmp_path / "broken"))
    assert stopped_at == 2 and latest.endswith("checkpoint-2")
    resumed, resumed_steps = train(tmp_path / "broken", resume=latest)
    assert steps == resumed_steps == 4
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)


def test_resolve_resume(tmp_path):
    from pipeline.sft import resolve_resume

    assert resolve_resume(None, str(tmp_path)) is None
    assert resolve_resume("latest", str(tmp_path)) is None
    for step in (3, 12, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (3, 12):  # checkpoint-20 was cut short: transformers writes trainer_state.json last
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert resolve_resume("latest", str(tmp_path)).endswith("checkpoint-12")
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        resolve_resume(str(tmp_path / "nope"), str(tmp_path))


def test_a_resumed_run_reuses_the_base_evaluation_only_with_the_same_settings(tmp_path):
    from types import SimpleNamespace

    from pipeline.sft import finished_evaluation

    folder = tmp_path / "eval_before"
    folder.mkdir()
    written = {"num_problems": 8, "settings": {"limit": 8, "max_new_tokens": 32, "seed": 42}}
    (folder / "summary.json").write_text(json.dumps(written))
    script = SFTScriptArguments(eval_limit=8, eval_max_new_tokens=32)
    assert finished_evaluation(folder, script, SimpleNamespace(resume_from_checkpoint="latest", seed=42)) == written
    assert finished_evaluation(folder, script, SimpleNamespace(resume_from_checkpoint=None, seed=42)) is None
    assert finished_evaluation(folder, SFTScriptArguments(eval_limit=8, eval_max_new_tokens=64),
                               SimpleNamespace(resume_from_checkpoint="latest", seed=42)) is None
    assert finished_evaluation(tmp_path / "missing", script, SimpleNamespace(resume_from_checkpoint="latest", seed=42)) is None


def test_sft_evaluation_places_every_tensor_on_the_model_device(tiny_model_dir, mini_gsm8k, tmp_path,
                                                               meta_default_device):
    """SFT's before/after evaluation under torch's default device `meta` (see conftest), as on a GPU."""
    from pipeline.sft import evaluate_on_test

    summary = evaluate_on_test(ModelArguments(model_name_or_path=str(tiny_model_dir)),
                               DataArguments(dataset_name=str(mini_gsm8k)),
                               SFTScriptArguments(eval_limit=2, eval_max_new_tokens=4), tmp_path, seed=0, device="cpu")
    assert summary["num_problems"] == 2 and summary["generated_tokens"] > 0


def test_sft_options_fit_a_machine_without_a_gpu(monkeypatch, caplog):
    """train_sft.py's options with neither --bf16 nor --use_cpu on a machine without a GPU: float32 on the CPU,
    each said in a log line, where TRL's SFTConfig stops on transformers' bf16 check. An explicit bf16 is kept."""
    import logging

    import transformers.training_args
    import transformers.utils

    from pipeline.config import parse_config
    from pipeline.sft import SFTTrainingArguments

    for module in (transformers.utils, transformers.training_args):
        monkeypatch.setattr(module, "is_torch_bf16_gpu_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="pipeline.sft"):
        (args,) = parse_config([SFTTrainingArguments], ["--output_dir", "x"])
    assert (args.bf16, args.use_cpu) == (False, True)
    assert "SFT trains in float32" in caplog.text and "SFT trains on the CPU" in caplog.text
    (forced,) = parse_config([SFTTrainingArguments], ["--output_dir", "x", "--bf16", "true"])
    assert (forced.bf16, forced.use_cpu) == (True, True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, but the user trains on the CPU
    for module in (transformers.utils, transformers.training_args):
        monkeypatch.setattr(module, "is_torch_bf16_gpu_available", lambda: True)
    (on_cpu,) = parse_config([SFTTrainingArguments], ["--output_dir", "x", "--use_cpu", "true"])
    assert (on_cpu.bf16, on_cpu.use_cpu) == (False, True)


def test_sft_evaluations_judge_text_answers(tiny_model_dir, tmp_path):
    """Text gold answers: the before/after evaluation judges them by normalised text match (auto), and a numeric
    reading asked for is refused before any weights load, naming the row and the option."""
    from pipeline.data import DataError
    from pipeline.sft import evaluate_on_test

    path = tmp_path / "capitals.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Capital of {c}?", "answer": a}) + "\n" for c, a in
                            [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Peru", "Lima")]))
    data = DataArguments(dataset_name=str(path), eval_holdout_size=2)
    model = ModelArguments(model_name_or_path=str(tiny_model_dir))
    summary = evaluate_on_test(model, data, SFTScriptArguments(eval_limit=2, eval_max_new_tokens=2), tmp_path / "ev",
                               seed=0, device="cpu")
    assert (summary["answer_match"], summary["num_problems"]) == ("text", 2)
    with pytest.raises(DataError, match=rf"^{path}:\d: gold answer '[A-Za-z]+' is not one number .*; fix the row, "
                                        "or judge answers as text with --eval_answer_match text$"):
        run_sft(SFTScriptArguments(eval_limit=2, eval_answer_match="numeric"), sft_config(tmp_path / "run"), model, data)
    assert not (tmp_path / "run" / "eval_before").exists()
