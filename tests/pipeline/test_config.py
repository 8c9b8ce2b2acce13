import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.arguments import DataArguments, EvalArguments, ModelArguments
from pipeline.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
TYPES = [ModelArguments, DataArguments, EvalArguments]


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_then_cli_override(tmp_path):
    path = write(tmp_path, "limit: 5\nbatch_size: 4\ntemperature: 1\nlora_target_modules: [q_proj]\n")
    model, data, ev = parse_config(TYPES, ["--config", path, "--batch_size", "8"])
    assert (ev.limit, ev.batch_size) == (5, 8)
    assert ev.temperature == 1.0 and isinstance(ev.temperature, float)
    assert model.lora_target_modules == ["q_proj"]
    assert data.dataset_name == "bundled"


@pytest.mark.parametrize(
    "yaml_text, args, message",
    [
        ("limt: 5\n", [], "unknown option 'limt'; did you mean 'limit'"),
        ("zzz_option: 1\n", [], "unknown option 'zzz_option'; see --help"),
        ("limit: 0\n", [], "option --limit: must be >= 1, got 0"),
        ("batch_size: many\n", [], "batch_size"),
        ("batch_size: 2.5\n", [], "option --batch_size: expected int, got 2.5"),
        ("temperature: hot\n", [], "temperature"),
        ("top_p: 1.5\n", [], "option --top_p: must be in (0, 1]"),
        ("dtype: fp8\n", [], "option --dtype: 'fp8' is not one of float32, bfloat16, float16, auto"),
        ("prompt_template: fancy\n", [], "option --prompt_template: 'fancy' is not one of"),
        ("lora_dropout: 1.0\n", [], "option --lora_dropout"),
        ("load_in_4bit: true\n", [], "option --load_in_4bit: 4-bit weights cannot be trained"),
        ("- a\n- b\n", [], "must be a YAML mapping"),
        ("limit: [\n", [], "invalid YAML"),
        ("", ["--max_new_tokens", "0"], "option --max_new_tokens: must be >= 1"),
        ("", ["--unknown_flag", "1"], "unknown command-line argument(s): --unknown_flag"),
    ],
)
def test_bad_values_name_the_option(tmp_path, yaml_text, args, message):
    with pytest.raises(ConfigError) as info:
        parse_config(TYPES, ["--config", write(tmp_path, yaml_text), *args])
    assert message in str(info.value)


def test_yaml_can_turn_off_an_option_that_defaults_to_true(tmp_path):
    from pipeline.grpo.config import GRPOArguments

    (grpo,) = parse_config([GRPOArguments], ["--config", write(tmp_path, "eval_before: false\n")])
    assert grpo.eval_before is False
    (grpo,) = parse_config([GRPOArguments], ["--config", write(tmp_path, "eval_before: false\n"), "--eval_before", "true"])
    assert grpo.eval_before is True


def test_missing_config_file():
    with pytest.raises(ConfigError, match="--config /no/such.yaml: file not found"):
        parse_config(TYPES, ["--config", "/no/such.yaml"])


def _script_for(config_path: Path) -> Path:
    """The entry script named in a config's header comment ('python scripts/x.py --config ...')."""
    match = re.search(r"scripts/(\w+)\.py", config_path.read_text())
    assert match, f"{config_path}: header must name the script that reads it"
    return ROOT / "scripts" / f"{match.group(1)}.py"


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass defined in the script looks its module up there
    spec.loader.exec_module(module)
    return module


# configs/accelerate: accelerate's launch configs; configs/lm_eval: lm-eval's task configs (tests/pipeline/evaluation)
TRAINING_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if not {"accelerate", "lm_eval"} & set(p.parts))


@pytest.mark.parametrize("config_path", TRAINING_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_parses(config_path):
    import torch

    script = _load_script(_script_for(config_path))
    overrides = []
    has_use_cpu = any("use_cpu" in t.__dataclass_fields__ for t in script.CONFIG_TYPES)
    if "gpu" in config_path.stem and has_use_cpu and not torch.cuda.is_available():
        # transformers refuses bf16 without a GPU unless use_cpu is set; every other key is still checked.
        overrides = ["--use_cpu", "true"]
    parsed = parse_config(script.CONFIG_TYPES, ["--config", str(config_path), *overrides])
    assert len(parsed) == len(script.CONFIG_TYPES)


ACCELERATE_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("config_path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_load(config_path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(config_path))  # raises on unknown keys
    # -1: "all GPUs", given as --num_processes N at launch (accelerate asks for it)
    assert (config.num_processes >= 2 or config.num_processes == -1) and config.distributed_type.value in {"MULTI_GPU", "DEEPSPEED", "FSDP"}


def test_configs_exist():
    assert TRAINING_CONFIGS, "configs/ holds no YAML"


def run_script(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_help_documents_every_option():
    result = run_script("scripts/evaluate.py", "--help")
    assert result.returncode == 0
    for dtype in TYPES:
        for name in dtype.__dataclass_fields__:
            assert f"--{name}" in result.stdout, name
    assert "--config" in result.stdout


def test_bad_config_value_fails_before_any_model_loads(tmp_path):
    # The model path does not exist: had the script tried to load it first, that error would show instead.
    path = write(tmp_path, "model_name_or_path: /no/such/model\nbatch_size: 0\n")
    result = run_script("scripts/evaluate.py", "--config", path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: option --batch_size: must be >= 1, got 0"
    assert "Loading weights" not in result.stderr


@pytest.mark.parametrize("where", ["cli", "yaml"])
def test_trls_grpo_names_work_where_they_mean_the_same(tmp_path, where):
    """TRL's --epsilon is epsilon_low (epsilon_high keeps its 0.28) and use_bias_correction_kl is
    kl_importance_correction, on the command line and in a YAML file alike."""
    from pipeline.grpo.config import GRPOArguments

    args = ["--epsilon", "0.1", "--use_bias_correction_kl", "true"]
    if where == "yaml":
        args = ["--config", write(tmp_path, "epsilon: 0.1\nuse_bias_correction_kl: true\n")]
    (grpo,) = parse_config([GRPOArguments], args)
    assert (grpo.epsilon_low, grpo.epsilon_high, grpo.kl_importance_correction) == (0.1, 0.28, True)


@pytest.mark.parametrize("option, ours", [("per_device_train_batch_size", "micro_batch_size"),
                                          ("num_train_epochs", "max_steps"), ("bf16", "mixed_precision")])
def test_trls_grpo_names_that_mean_something_else_are_refused_naming_ours(tmp_path, option, ours):
    from pipeline.grpo.config import GRPOArguments

    with pytest.raises(ConfigError, match=rf"^option --{option} is TRL's, not this project's: .*{ours}"):
        parse_config([GRPOArguments], [f"--{option}", "1"])
    path = write(tmp_path, f"{option}: 1\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(path)}: option '{option}' is TRL's, not this project's"):
        parse_config([GRPOArguments], ["--config", path])


def test_yaml_keys_are_field_names_or_their_aliases_only(tmp_path):
    """argparse's own spellings (the --no_ form of a bool, dashes) are no YAML keys: `no_eval_before: true` would
    otherwise be taken and do nothing."""
    from pipeline.grpo.config import GRPOArguments

    for key in ("no_eval_before", "max-steps"):
        with pytest.raises(ConfigError, match=rf"unknown option '{key}'"):
            parse_config([GRPOArguments], ["--config", write(tmp_path, f"{key}: true\n")])


def test_config_equals_form_is_read(tmp_path):
    from pipeline.grpo.config import GRPOArguments

    (grpo,) = parse_config([GRPOArguments], [f"--config={write(tmp_path, 'max_steps: 7')}", "--seed", "3"])
    assert (grpo.max_steps, grpo.seed) == (7, 3)


def test_a_prefix_of_an_option_is_refused_not_guessed():
    """argparse would take --lim for --limit (its allow_abbrev): a typo or a cut name must not set an option."""
    with pytest.raises(ConfigError, match=r"^unknown command-line argument\(s\): --lim 8"):
        parse_config(TYPES, ["--lim", "8"])


def test_a_misspelt_option_names_the_closest_one():
    from pipeline.grpo.config import GRPOArguments

    with pytest.raises(ConfigError) as info:
        parse_config([GRPOArguments], ["--max_step", "10"])
    assert str(info.value) == "unknown command-line argument(s): --max_step 10; did you mean '--max_steps'?"
    with pytest.raises(ConfigError, match=r"--max_step=10; did you mean '--max_steps'\?$"):
        parse_config([GRPOArguments], ["--max_step=10"])


def test_one_cutoff_for_did_you_mean_in_yaml_command_line_and_python_options(tmp_path):
    """A name sharing only a suffix (q_size ~ batch_size, xyz_limit ~ eval_limit) is no suggestion anywhere."""
    from pipeline.config import closest_name, configs_from_options
    from pipeline.grpo.config import GRPOArguments

    assert closest_name("q_size", ["batch_size", "limit"]) is None
    assert closest_name("limt", ["batch_size", "limit"]) == "limit"
    with pytest.raises(ConfigError) as info:
        parse_config(TYPES, ["--config", write(tmp_path, "q_size: 1\n")])
    assert str(info.value).endswith("unknown option 'q_size'; see --help for the valid options")
    with pytest.raises(ConfigError) as info:
        parse_config([GRPOArguments], ["--xyz_limit", "1"])
    assert str(info.value) == "unknown command-line argument(s): --xyz_limit 1; see --help"
    with pytest.raises(ConfigError) as info:
        configs_from_options([GRPOArguments], {"xyz_limit": 1})
    assert str(info.value) == "option 'xyz_limit' is unknown"
    with pytest.raises(ConfigError) as info:
        configs_from_options([GRPOArguments], {"max_step": 1})
    assert str(info.value) == "option 'max_step' is unknown; did you mean 'max_steps'?"
