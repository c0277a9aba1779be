"""Write the SAM-transformed `template.yaml` as JSON, for cfn-lint and checkov (`make check-template`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orderpipe_local.stack.template import transformed_template


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--template", type=Path, default=None)
    parser.add_argument("--config-env", default="default", help="samconfig.toml environment")
    args = parser.parse_args(argv)
    template = transformed_template(args.template, environment=args.config_env)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(template, indent=2) + "\n")


if __name__ == "__main__":
    main()
