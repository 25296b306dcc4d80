"""logbert.config: YAML sets defaults, the command line wins, reference keys map onto Hugging Face's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import logbert.config
from logbert.config import ConfigError, parse_args, resolved_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture
def parse(tmp_path):
    """parse(*argv, config=None): parse_args with output and cache in tmp_path (later flags may override)."""

    def run(*argv: str, config: str | dict | None = None):
        args = ["--output_dir", str(tmp_path / "out"), "--data_cache_dir", str(tmp_path / "cache")]
        if isinstance(config, dict):
            path = tmp_path / "config.yaml"
            path.write_text(yaml.safe_dump(config))
            config = str(path)
        if config is not None:
            args += ["--config", config]
        return parse_args(args + list(argv))

    return run


@pytest.fixture
def write_config(tmp_path):
    """write_config(text) -> path of a YAML file with exactly that text (YAML 1.1 quirks included)."""

    def write(text: str) -> str:
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return str(path)

    return write


def yaml_sections(name: str) -> dict:
    with open(CONFIGS / name, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    return {key: value for section in raw.values() for key, value in section.items()}


def test_parse_args_returns_the_three_argument_sets_and_the_config_path(parse, tmp_path):
    model_args, data_args, training_args, scoring_args, config_path = parse()
    assert config_path is None
    assert training_args.output_dir == str(tmp_path / "out")
    assert data_args.data_cache_dir == str(tmp_path / "cache")
    assert data_args.max_seq_length == model_args.max_position_embeddings  # default: the model's length


def test_reference_config_maps_onto_hugging_face_arguments(parse, monkeypatch):
    monkeypatch.setattr(logbert.config, "_cuda_available", lambda: False)
    keys = yaml_sections("logbert-base.yaml")

    model_args, data_args, training_args, _, config_path = parse(config=str(CONFIGS / "logbert-base.yaml"))

    assert config_path == str(CONFIGS / "logbert-base.yaml")
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings"):
        assert getattr(model_args, name) == keys[name], name
    assert training_args.per_device_train_batch_size == keys["batch_size"]
    assert training_args.per_device_eval_batch_size == keys["batch_size"]
    assert isinstance(training_args.learning_rate, float)
    assert training_args.learning_rate == float(keys["learning_rate"])  # PyYAML reads 2e-5 as a string
    assert training_args.num_train_epochs == keys["num_epochs"]
    assert data_args.mlm_probability == keys["mask_prob"]
    assert training_args.weight_decay == keys["weight_decay"]
    assert training_args.gradient_accumulation_steps == keys["gradient_accumulation_steps"]
    assert training_args.dataloader_num_workers == keys["num_workers"]
    assert training_args.lr_scheduler_type == keys["lr_scheduler_type"]
    assert data_args.validation_split == keys["validation_split"]
    assert (training_args.fp16, training_args.bf16) == (False, False)  # fp16 falls back to fp32 without a GPU


@pytest.mark.parametrize("precision, cuda, expected", [("fp16", True, (True, False)), ("no", True, (False, False)),
                                                        ("fp16", False, (False, False)),
                                                        ("bf16", False, (False, False))])
def test_mixed_precision_sets_fp16_or_bf16(precision, cuda, expected, parse, monkeypatch):
    monkeypatch.setattr(logbert.config, "_cuda_available", lambda: cuda)
    _, _, training_args, _, _ = parse(config={"training": {"mixed_precision": precision}})
    assert (training_args.fp16, training_args.bf16) == expected


def test_tiny_config_parses(parse):
    keys = yaml_sections("tiny.yaml")
    model_args, _, training_args, _, _ = parse(config=str(CONFIGS / "tiny.yaml"))
    assert model_args.hidden_size == keys["hidden_size"]
    assert model_args.num_hidden_layers == keys["num_hidden_layers"]
    assert training_args.max_steps == keys["max_steps"]
    assert training_args.learning_rate == float(keys["learning_rate"])
    assert training_args.per_device_train_batch_size == keys["batch_size"]


def test_command_line_wins_over_yaml(parse):
    model_args, data_args, training_args, _, _ = parse(
        "--hidden_size", "64", "--batch_size", "8", "--learning_rate", "1e-4", "--mask_prob", "0.2",
        config=str(CONFIGS / "tiny.yaml"))
    assert model_args.hidden_size == 64
    assert training_args.per_device_train_batch_size == training_args.per_device_eval_batch_size == 8
    assert training_args.learning_rate == pytest.approx(1e-4)
    assert data_args.mlm_probability == 0.2


def test_a_command_line_hugging_face_flag_wins_over_a_yaml_reference_key(parse):
    _, data_args, training_args, _, _ = parse("--per_device_train_batch_size", "4", "--mlm_probability", "0.3",
                                           config={"training": {"batch_size": 16, "mask_prob": 0.2}})
    assert training_args.per_device_train_batch_size == 4
    assert training_args.per_device_eval_batch_size == 16
    assert data_args.mlm_probability == 0.3


def test_a_command_line_reference_key_wins_over_a_yaml_hugging_face_key(parse):
    _, _, training_args, _, _ = parse("--num_epochs", "2", config={"training": {"num_train_epochs": 7}})
    assert training_args.num_train_epochs == 2


@pytest.mark.parametrize("config", ["logbert-base.yaml", "tiny.yaml", "hdfs.yaml"])
def test_every_config_key_is_also_a_command_line_flag(config, parse, monkeypatch):
    monkeypatch.setattr(logbert.config, "_cuda_available", lambda: False)
    argv = []
    for key, value in yaml_sections(config).items():
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]

    from_yaml = parse(config=str(CONFIGS / config))
    from_flags = parse(*argv)

    assert from_flags[0] == from_yaml[0]
    assert from_flags[1] == from_yaml[1]
    assert from_flags[2].to_dict() == from_yaml[2].to_dict()
    assert from_flags[3] == from_yaml[3]  # scoring


def test_hyphenated_data_dir_and_output_dir(tmp_path):
    _, data_args, training_args, _, _ = parse_args(["--data-dir", str(tmp_path / "logs"), "--output-dir",
                                                 str(tmp_path / "run"), "--data_cache_dir", str(tmp_path)])
    assert data_args.data_dir == str(tmp_path / "logs")
    assert training_args.output_dir == str(tmp_path / "run")


def test_unknown_key_is_an_error_naming_it(parse):
    with pytest.raises(ConfigError, match="unknown key 'training.bogus_key'"):
        parse(config={"training": {"bogus_key": 1}})


@pytest.mark.parametrize("section, key, value", [("model", "hidden_size", "abc"), ("model", "hidden_size", 64.5),
                                                 ("training", "learning_rate", "fast"),
                                                 ("data", "validation_split", "sideways"),
                                                 ("data", "skip_bad_records", "maybe"),
                                                 ("data", "max_seq_length", [1, 2])])
def test_wrong_type_is_an_error_naming_the_key(section, key, value, parse):
    with pytest.raises(ConfigError, match=f"'{section}.{key}'"):
        parse(config={section: {key: value}})


def test_wrong_type_for_a_default_true_bool_is_an_error_naming_the_key(parse):
    with pytest.raises(ConfigError, match="'data.truncate_long_sessions'"):
        parse(config={"data": {"truncate_long_sessions": "maybe"}})


def test_an_explicit_flag_wins_over_a_reference_alias_on_the_command_line(parse):
    _, _, training_args, _, _ = parse("--batch_size", "8", "--per_device_eval_batch_size", "4")
    assert training_args.per_device_train_batch_size == 8
    assert training_args.per_device_eval_batch_size == 4


def test_bare_use_multi_gpu_flag(parse):
    assert parse("--use_multi_gpu").training.world_size == 1  # parses, informational: accelerate starts processes


def test_yaml_booleans_set_flags(parse):
    _, data_args, _, _, _ = parse(config={"data": {"truncate_long_sessions": False, "skip_bad_records": True}})
    assert (data_args.truncate_long_sessions, data_args.skip_bad_records) == (False, True)
    _, data_args, _, _, _ = parse("--skip_bad_records", "false", config={"data": {"skip_bad_records": True}})
    assert data_args.skip_bad_records is False


def test_yaml_strings_are_converted_as_the_flags_would_be(parse, write_config):
    path = write_config("training:\n  learning_rate: 2e-5\n  warmup_steps: 1e2\n  top_k: 3\n"
                        "data:\n  train_file: sessions.json\n")
    _, data_args, training_args, _, _ = parse(config=path)
    assert training_args.learning_rate == pytest.approx(2e-5)
    assert training_args.warmup_steps == 100.0
    assert training_args.top_k == [3]
    assert data_args.train_file == ["sessions.json"]


def test_a_key_set_twice_is_an_error(parse):
    with pytest.raises(ConfigError, match="'hidden_size' is set twice"):
        parse(config={"model": {"hidden_size": 64}, "training": {"hidden_size": 32}})


def test_a_reference_key_and_its_target_disagreeing_in_yaml_is_an_error(parse):
    with pytest.raises(ConfigError, match="both 'batch_size' and 'per_device_train_batch_size'"):
        parse(config={"training": {"batch_size": 16, "per_device_train_batch_size": 8}})


def test_missing_or_malformed_config_file(parse, tmp_path, write_config):
    with pytest.raises(ConfigError, match="no such file"):
        parse(config=str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse(config=write_config("model: [unclosed\n"))
    with pytest.raises(ConfigError, match="section 'model' must be a mapping"):
        parse(config=write_config("model: 3\n"))


@pytest.mark.parametrize("argv, flag", [(["--hidden_size", "64", "--num_attention_heads", "5"], "--hidden_size"),
                                        (["--mask_prob", "1.5"], "--mlm_probability"),
                                        (["--max_position_embeddings", "64", "--max_seq_length", "128"],
                                         "--max_seq_length"),
                                        (["--validation_split_percentage", "100"], "--validation_split_percentage")])
def test_inconsistent_values_are_config_errors_naming_the_flag(argv, flag, parse):
    with pytest.raises(ConfigError, match=flag):
        parse(*argv)


def test_without_the_end_slot_the_default_score_falls_back_to_max_nll(parse):
    assert parse().scoring.score_name == "next_max_nll"
    assert parse("--end_of_session_probability", "0").scoring.score_name == "max_nll"
    with pytest.raises(ConfigError, match="needs the end slot"):
        parse("--end_of_session_probability", "0", "--score_name", "combined")


def test_scoring_settings_have_their_own_arguments(parse):
    scoring = parse("--threshold_target_fpr", "0.01", "--num_candidates", "3", "--known_normal_gate", "false",
                    config={"scoring": {"score_name": "mean_nll"}}).scoring
    assert (scoring.threshold_target_fpr, scoring.num_candidates, scoring.known_normal_gate) == (0.01, 3, False)
    assert scoring.score_name == "mean_nll"
    assert not hasattr(parse().training, "threshold_target_fpr")
    with pytest.raises(ConfigError, match="--threshold_target_fpr"):
        parse("--threshold_target_fpr", "2")


def test_intermediate_size_defaults_to_four_times_the_width_as_in_bert(parse, write_config):
    model_args = parse(config=write_config("model:\n  hidden_size: 768\n  num_attention_heads: 12\n")).model
    assert model_args.intermediate_size == 3072
    assert parse("--intermediate_size", "100").model.intermediate_size == 100


def test_nothing_is_reported_to_trackers_unless_asked(parse):
    assert parse().training.report_to in ([], ["none"])
    assert parse("--report_to", "tensorboard").training.report_to == ["tensorboard"]


def test_do_eval_false_turns_evaluation_off(parse):
    assert parse().training.do_eval is True
    training = parse("--do_eval", "false").training
    assert training.do_eval is False and training.eval_strategy == "no"


@pytest.mark.parametrize("typo, suggestion", [("--max_stpes", "--max_steps"), ("--max_step", "--max_steps"),
                                              ("--learning_rat", "--learning_rate")])
def test_a_mistyped_flag_is_one_line_with_a_suggestion_and_never_a_prefix_match(parse, typo, suggestion):
    with pytest.raises(ConfigError) as raised:
        parse(typo, "10")
    message = str(raised.value)
    assert typo in message and f"did you mean {suggestion}?" in message and "\n" not in message


def test_help_prints_and_exits_0_although_help_texts_hold_percent_signs(capsys):
    with pytest.raises(SystemExit) as raised:
        parse_args(["--help"])
    assert raised.value.code == 0
    assert "85% of positions" in capsys.readouterr().out


def test_the_saved_resolved_config_reproduces_the_run_when_given_as_config(parse, tmp_path):
    first = parse("--max_steps", "7", "--learning_rate", "2e-4", "--num_candidates", "4",
                  config=str(CONFIGS / "tiny.yaml"))
    saved = tmp_path / "training_config.yaml"
    saved.write_text(yaml.safe_dump(resolved_config(*first[:4])))
    again = parse_args(["--config", str(saved)])
    assert resolved_config(*again[:4]) == resolved_config(*first[:4])
    assert again.training.max_steps == 7 and again.scoring.num_candidates == 4
