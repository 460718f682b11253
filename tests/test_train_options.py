"""One definition of the train-probe options (pipeline/scoring/train_options.py): `profile-audit train-probe`'s
arguments and the train-probe DAG's Params are generated from it, so the two cannot drift apart again (they
had: the DAG defaulted to ViT-L-14/openai, the CLI to pa-tiny-vit)."""

from __future__ import annotations

import pytest
from conftest import REPO

from pipeline.errors import UserError
from pipeline.scoring.train_options import TrainOptions, option_specs


def _train_probe_parser():
    from pipeline.cli import build_parser

    return build_parser()._subparsers._group_actions[0].choices["train-probe"]


def _dag_params(params: dict | None = None):
    from airflow.sdk.definitions.param import ParamsDict

    from pipeline.airflow.params import train_probe_param_specs

    return ParamsDict(params or train_probe_param_specs())


def test_every_option_is_a_cli_argument_and_a_dag_param_with_the_same_default_and_choices():
    actions = {a.dest: a for a in _train_probe_parser()._actions}
    params = _dag_params()
    for spec in option_specs():
        action, param = actions[spec.name], params.get_param(spec.param)
        assert param.schema["section"] == "Training" and param.schema["title"], spec.name
        if spec.required:
            assert action.required and param.schema["minLength"] == 1, spec.name
            continue
        assert action.default == (list(spec.default) if spec.type is tuple else spec.default), spec.name
        assert param.value == action.default, spec.name
        enum = [v for v in param.schema.get("enum", []) if v is not None]
        assert list(action.choices or []) == enum == list(spec.choices or []), spec.name
        if spec.nullable:
            assert param.schema["type"] == ["null", "string"], spec.name  # the trigger form sends "" as missing
    extra = set(params) - {s.param for s in option_specs()}
    assert extra == {"eval_real_dir", "eval_fake_dir"}  # the DAG's own evaluation step
    assert all(params[name] is None for name in extra)


def test_cli_and_dag_defaults_give_the_same_options(tmp_path):
    """Only the folders given: the CLI and a DAG run ask `train_probe` for the same thing, pa-tiny-vit included."""
    args = _train_probe_parser().parse_args(["--real", str(tmp_path / "r"), "--fake", str(tmp_path / "f")])
    from_cli = TrainOptions.from_values(vars(args))
    params = _dag_params()
    dag = {name: params.get_param(name).value for name in params}  # the defaults a plain trigger starts from
    from_dag = TrainOptions.from_values({**dag, "real_dir": str(tmp_path / "r"), "fake_dir": str(tmp_path / "f")})
    assert from_cli == from_dag
    assert (from_dag.model, from_dag.weights, from_dag.normalize) == ("pa-tiny-vit", None, True)
    cli_off = TrainOptions.from_values(vars(_train_probe_parser().parse_args(
        ["--real", "r", "--fake", "f", "--no-normalize", "--eye-exempt", "ffhq", "--eye-exempt", "celeba"])))
    assert (cli_off.normalize, cli_off.eye_exempt) == (False, ("ffhq", "celeba"))


@pytest.mark.parametrize(("name", "value", "message"), [
    ("crop_prob", 2.0, "--crop-prob must be between 0 and 1, got 2.0"),
    ("target_fpr", 1.0, "--target-fpr must be in (0, 1), got 1.0"),
    ("feature", "cls", "--feature cls applies only to --model clip-vit-b16"),
])
def test_out_of_range_options_are_refused_before_any_folder_is_read(tmp_path, name, value, message):
    options = TrainOptions.from_values({"real": tmp_path / "missing", "fake": tmp_path / "missing", name: value})
    with pytest.raises(UserError) as refused:
        options.train(settings=None)
    assert message in str(refused.value)


def test_a_dag_param_out_of_range_fails_airflow_validation():
    from airflow.sdk.exceptions import ParamValidationError

    params = _dag_params()
    params["crop_prob"] = 0.5
    params["weights"] = None  # nullable: an emptied trigger-form field
    for name, value in (("crop_prob", 1.5), ("target_fpr", 0), ("calibration", "sigmoid"), ("feature", "pooled")):
        with pytest.raises(ParamValidationError, match=name):
            params[name] = value
    assert (params["crop_prob"], params["weights"]) == (0.5, None)


@pytest.mark.slow
def test_the_train_probe_dag_takes_its_params_from_the_options(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from pipeline.airflow.params import train_probe_param_specs

    bag = DagBag(str(REPO / "dags" / "profile_audit_train_probe.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("profile_audit_train_probe")
    expected = train_probe_param_specs()
    assert {k: dag.params.get_param(k).schema for k in dag.params} == {k: p.schema for k, p in expected.items()}
    assert {k: dag.params.get_param(k).value for k in dag.params} == {k: p.value for k, p in expected.items()}
