"""Validates deploy/ecs/*.json against the ECS API model that ships with botocore.

    python deploy/tools/ecs_validate.py deploy/ecs/task-definition.json deploy/ecs/service.json

task-definition.json is the input of RegisterTaskDefinition (what
`aws ecs register-task-definition --cli-input-json file://...` sends) and service.json the input
of CreateService. botocore's ParamValidator checks every key, type, enum value and required
member, as the AWS CLI does before it sends the request. Exit status 1 on any error. The
cross-references (containers, ports, volumes, health check path, stop timeout) are checked in
tests/tests/deploy_files.rs.
"""
import json
import sys

import botocore
import botocore.session
from botocore.validate import ParamValidator

OPERATIONS = {"task-definition.json": "RegisterTaskDefinition", "service.json": "CreateService"}


def main(paths):
    model = botocore.session.get_session().get_service_model("ecs")
    failed = False
    for path in paths:
        name = path.rsplit("/", 1)[-1]
        op = OPERATIONS.get(name)
        if op is None:
            print(f"{path}: unknown file (expected one of {sorted(OPERATIONS)})")
            failed = True
            continue
        with open(path) as f:
            params = json.load(f)
        shape = model.operation_model(op).input_shape
        report = ParamValidator().validate(params, shape)
        if report.has_errors():
            print(f"{path}: not a valid {op} request (botocore {botocore.__version__}):")
            print(report.generate_report())
            failed = True
        else:
            print(f"{path}: valid {op} input (botocore {botocore.__version__}, ecs {model.api_version})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
