"""Prints YAML files as one JSON object {path: document}: CloudFormation templates through
cfn-lint's decoder (short-form intrinsics such as !Sub become {"Fn::Sub": ...}), anything else
through PyYAML. Lets the Rust tests read YAML without a YAML crate.

    python deploy/tools/yaml2json.py [--cfn] FILE...
"""
import json
import sys


def main(args):
    cfn = "--cfn" in args
    paths = [a for a in args if a != "--cfn"]
    out = {}
    for p in paths:
        if cfn:
            from cfnlint.decode import decode

            doc, matches = decode(p)
            if matches:
                for m in matches:
                    print(f"{p}: {m}", file=sys.stderr)
                return 1
        else:
            import yaml

            with open(p) as f:
                doc = yaml.safe_load(f)
        out[p] = doc
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
