"""Every DAG's Params as Airflow's trigger form sees them (issue 25, item 6): a Param whose JSON-schema type
does not include "null" is marked required (`*`) and blocks the Trigger button while empty, and the form
sends an emptied field as missing. So an investigator who fills in only the required fields must get
valid Params, and only the fields that are really required may be required."""

from __future__ import annotations

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # parses the DAG files with Airflow

REQUIRED = {  # what a person must fill in to trigger each DAG
    "profile_audit_nightly": set(),
    "profile_audit_investigate": {"export_path"},
    "profile_audit_train_probe": {"real_dir", "fake_dir"},
}
FILLED = {"export_path": "/data/export", "real_dir": "/data/real", "fake_dir": "/data/fake"}


def _dags() -> dict:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO / "dags"))
    assert bag.import_errors == {}
    return {dag_id: bag.get_dag(dag_id) for dag_id in REQUIRED}


def _form_required(param) -> bool:
    kind = param.schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    return "null" not in kinds and param.value in (None, "")


def test_only_the_really_required_params_are_required_in_the_form(airflow_db):
    for dag_id, dag in _dags().items():
        params = dag.params
        required = {name for name in params if _form_required(params.get_param(name))}
        assert required == REQUIRED[dag_id], f"{dag_id}: the form would require {sorted(required)}"


def test_params_validate_with_only_the_required_fields_filled(airflow_db):
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    for dag_id, dag in _dags().items():
        params = dag.params
        for name in params:
            param = params.get_param(name)
            # what the form sends: the default, an empty field as missing (None), the required ones filled
            value = FILLED[name] if name in REQUIRED[dag_id] else (None if param.value == "" else param.value)
            Param(value, **param.schema).resolve(suppress_exception=False)  # raises on an invalid value
        for name in REQUIRED[dag_id]:  # and the check can fail: a required field left empty is refused
            with pytest.raises(ParamValidationError):
                Param(None, **params.get_param(name).schema).resolve(suppress_exception=False)
