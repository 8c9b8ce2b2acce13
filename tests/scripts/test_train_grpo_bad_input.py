"""Bad input to scripts/train_grpo.py: a one-line error naming the option or file:line, before any weights load."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"question": "What is 1+1?", "answer": "1+1=2\n#### 2"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("bad-input")
    (root / "ok").mkdir()
    (root / "ok" / "train.jsonl").write_text("".join(json.dumps(GOOD) + "\n" for _ in range(8)))
    (root / "ok" / "test.jsonl").write_text(json.dumps(GOOD) + "\n")
    (root / "missing_field").mkdir()
    (root / "missing_field" / "train.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps({"question": "q"}) + "\n")
    (root / "empty").mkdir()
    (root / "empty" / "train.jsonl").write_text("\n")
    (root / "text_answer.jsonl").write_text("".join(json.dumps({"prompt": "1+1?", "answer": a}) + "\n"
                                                    for a in (2, "two", 2, 2, 2, 2, 2, 2, 2, 2)))
    (root / "reserved.jsonl").write_text("".join(json.dumps({"prompt": "1+1?", "answer": 2, "weights": 1}) + "\n"
                                                 for _ in range(4)))
    (root / "done").mkdir()
    (root / "done" / "merged").symlink_to(tiny_model_dir)  # a finished run's model, to start the next stage from
    (root / "truncate.yaml").write_text("vllm_importance_sampling_mode: token_truncate\n"
                                        "vllm_importance_sampling_clip_max: null\n")
    return root, tiny_model_dir


CASES = [
    # (extra CLI arguments, the one line expected on stderr; {root} and {model} are filled in)
    (["--nonexistent_option", "1"], "error: unknown command-line argument(s): --nonexistent_option 1; see --help"),
    (["--num_generations", "1"], "error: option --num_generations: must be >= 2: advantages compare samples within a group, got 1"),
    (["--num_generations", "four"], "error: argument --num_generations/--num-generations: invalid int value: 'four'"),
    (["--prompts_per_step", "0"], "error: option --prompts_per_step: must be >= 1, got 0"),
    (["--micro_batch_size", "0"], "error: option --micro_batch_size: must be >= 1, got 0"),
    (["--temperature", "0"], "error: option --temperature: must be > 0, got 0.0"),
    (["--top_p", "1.5"], "error: option --top_p: must be in (0, 1], got 1.5"),
    (["--beta", "-1"], "error: option --beta: must be >= 0, got -1.0"),
    (["--loss_type", "ppo"], "error: argument --loss_type/--loss-type: invalid choice: 'ppo' (choose from 'grpo', 'bnpo', 'dr_grpo', 'dapo', 'cispo', 'sapo', 'luspo', 'vespo')"),
    (["--reward_weights", "1", "2", "3"], "error: option --reward_weights: needs one weight per reward function (2)"),
    (["--reward_funcs", "acuracy"], "error: option --reward_funcs: unknown reward 'acuracy'. Valid names: accuracy"),
    (["--reward_funcs", "no_such_module:fn"], "error: option --reward_funcs: reward 'no_such_module:fn': cannot import module 'no_such_module'"),
    (["--max_completion_length", "2000"], "error: option --max_completion_length: max_prompt_length + max_completion_length = 2512 exceeds the model's 1024 positions"),
    (["--model_name_or_path", "/no/such/model"], "error: model path '/no/such/model' does not exist"),
    (["--model_name_or_path", "{root}/sft/merged"],
     "error: model path '{root}/sft/merged' does not exist: an SFT or GRPO run writes {root}/sft/merged when it "
     "finishes with --output_dir {root}/sft; run that stage first"),
    (["--dataset_name", "{root}/missing_field", "--grpo_holdout_size", "1"], "error: {root}/missing_field/train.jsonl:2: missing field 'answer'"),
    (["--dataset_name", "{root}/empty"], "error: {root}/empty (train): no usable rows"),
    (["--dataset_name", "{root}/nope.jsonl"], "error: {root}/nope.jsonl: dataset file not found"),
    (["--grpo_holdout_size", "100"],
     "error: option --grpo_holdout_size: 100 train problems kept for GRPO, but there are only 8; set a smaller number"),
    (["--dataset_name", "reasoning_gym:chain_summ"],
     "error: --dataset_name reasoning_gym:chain_summ: reasoning-gym has no task 'chain_summ'; did you mean chain_sum"),
    (["--reward_funcs", "reasoning_gym"], "error: option --reward_funcs: reasoning_gym needs the column 'metadata'"),
    (["--dataset_name", "{root}/text_answer.jsonl", "--eval_dataset_name", "{root}/ok", "--grpo_holdout_size", "0"],
     "error: {root}/text_answer.jsonl:2: gold answer 'two' is not one number"),
    (["--train_split", "test"], "error: option --train_split: 'test' is the evaluation split too"),
    (["--dataset_name", "{root}/reserved.jsonl", "--eval_dataset_name", "{root}/ok", "--grpo_holdout_size", "0"],
     "error: {root}/reserved.jsonl:1: the column 'weights' has a name the reward call uses itself; rename the column"),
    (["--dataset_name", "reasoning_gym:chain_sum", "--dataset_level", "99"],
     "error: option --dataset_level: 'chain_sum''s curriculum has levels 0 to"),
    (["--epsilon_low", "-0.1"], "error: option --epsilon_low: must be >= 0 (inf: no lower clip), got -0.1"),
    (["--config", "{root}/missing.yaml"], "error: --config {root}/missing.yaml: file not found"),
    (["--vllm_importance_sampling_clip_min", "5"],
     "error: option --vllm_importance_sampling_clip_min: must be <= vllm_importance_sampling_clip_max (3.0), got 5.0"),
    (["--config", "{root}/truncate.yaml"],
     "error: option --vllm_importance_sampling_clip_max: token_truncate clips the ratio: give clip_max (or clip_min)"),
    (["--use_vllm", "true", "--use_peft", "true", "--load_in_4bit", "true"],
     "error: option --use_vllm: does not combine with load_in_4bit (QLoRA)"),
    (["--model_name_or_path", "{root}/done/merged", "--output_dir", "{root}/done"],
     "error: option --output_dir: {root}/done holds the model this run starts from ({root}/done/merged), which the "
     "run's own merged/ would overwrite; give another folder"),
]


AS_A_USER_RUNS_IT = {0, 15}  # these cases also run as a subprocess, exactly as typed; the rest in this process


def run_in_process(args: list[str], capsys) -> tuple[int, str]:
    """scripts/train_grpo.py's entry (run_script(main, ...)) in this process: the same parsing, checks and
    exit status as the command line, without a second interpreter's start-up for each of the cases."""
    import importlib.util

    from pipeline.config import run_script

    spec = importlib.util.spec_from_file_location("train_grpo_script", ROOT / "scripts" / "train_grpo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = sys.argv
    sys.argv = ["train_grpo.py", *args]
    try:
        run_script(script.main, script.CONFIG_TYPES, description=script.__doc__)
        code = 0
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv = argv
    return code, capsys.readouterr().err


@pytest.mark.parametrize("index", range(len(CASES)), ids=[" ".join(c[0])[:40] for c in CASES])
def test_bad_input_fails_up_front_with_one_line(inputs, index, capsys):
    root, model = inputs
    extra, expected = CASES[index]
    base = ["--model_name_or_path", str(model), "--dataset_name", str(root / "ok"), "--grpo_holdout_size", "4",
            "--output_dir", str(root / "run"), "--max_steps", "1"]
    extra = [a.replace("{root}", str(root)) for a in extra]
    outcomes = [run_in_process([*base, *extra], capsys)]
    if index in AS_A_USER_RUNS_IT:
        done = subprocess.run([sys.executable, "scripts/train_grpo.py", *base, *extra], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        outcomes.append((done.returncode, done.stderr))
    for code, stderr in outcomes:
        last = stderr.strip().splitlines()[-1]
        assert code == 2, stderr[-2000:]
        assert last.startswith(expected.replace("{root}", str(root))), last
        assert "Loading weights" not in stderr and "Traceback" not in stderr
    assert not (root / "run" / "checkpoints").exists()


def test_the_bare_command_on_a_cpu_names_the_cpu_recipe(monkeypatch, capsys, tmp_path):
    """Neither --config nor --model_name_or_path on a machine without a GPU: one line naming the CPU configs,
    before any weights load (the defaults are a GPU's); naming a config or a model goes on to their own checks."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, stderr = run_in_process(["--output_dir", str(tmp_path / "run")], capsys)
    assert code == 2 and stderr.strip().splitlines()[-1].startswith("error: no --config: ")
    assert "configs/grpo_chain_sum_cpu.yaml" in stderr and "Loading weights" not in stderr
    monkeypatch.chdir(tmp_path)  # the recipe's SFT model (runs/chain_sum/sft/merged) is not made here
    code, stderr = run_in_process(["--config", str(ROOT / "configs" / "grpo_chain_sum_cpu.yaml")], capsys)
    assert code == 2 and stderr.strip().splitlines()[-1].startswith(
        "error: model path 'runs/chain_sum/sft/merged' does not exist: an SFT or GRPO run writes "
        "runs/chain_sum/sft/merged when it finishes with --output_dir runs/chain_sum/sft")
    code, stderr = run_in_process(["--model_name_or_path=/no/such/model"], capsys)
    assert code == 2 and stderr.strip().splitlines()[-1].startswith("error: model path '/no/such/model' does not exist")


def test_a_reward_whose_extra_is_missing_names_the_install_command(inputs, capsys, monkeypatch):
    """math_verify without the math-verify package (the `reasoning` extra): one line with the install command,
    before any weights load."""
    import importlib.util

    root, model = inputs
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "math_verify"
                        else real_find_spec(name, *a))
    code, stderr = run_in_process(["--model_name_or_path", str(model), "--dataset_name", str(root / "ok"),
                                   "--grpo_holdout_size", "4", "--output_dir", str(root / "run"),
                                   "--reward_funcs", "math_verify"], capsys)
    assert code == 2 and "Loading weights" not in stderr
    assert stderr.strip().splitlines()[-1] == ("error: option --reward_funcs: math_verify needs the math_verify "
                                               "package: pip install -e '.[reasoning]' (make install does)")
