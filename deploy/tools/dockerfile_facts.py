"""Prints the structure of a Dockerfile as JSON, parsed by dockerfile-parse.

    python deploy/tools/dockerfile_facts.py deploy/Dockerfile

Output: {"stages": [{"from": image, "as": alias|null, "instructions": [{"instruction", "value",
"startline"}...]}], "parent_images": [...], "args": {...}}. The assertions about the image live in
tests/tests/deploy_files.rs; this only parses (ARG defaults substituted into FROM lines).
"""
import json
import sys

from dockerfile_parse import DockerfileParser


def main(path):
    p = DockerfileParser(path=path)
    stages = []
    for ins in p.structure:
        name = ins["instruction"]
        if name == "FROM":
            parts = ins["value"].split()
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"from": parts[0], "as": alias, "instructions": []})
            continue
        if name == "COMMENT" or not stages:
            continue
        stages[-1]["instructions"].append(
            {"instruction": name, "value": ins["value"], "startline": ins["startline"] + 1}
        )
    json.dump(
        {"stages": stages, "parent_images": p.parent_images, "args": p.args},
        sys.stdout,
        indent=1,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
