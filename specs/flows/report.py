"""An example flow: orchestra calls main() with the run's parameters."""

from typing import Literal


def main(region: Literal["eu", "us", "apac"] = "eu", full: bool = False, limit: int = 100) -> None:
    kind = "full" if full else "incremental"
    print(f"building the {kind} report for {region} (limit {limit})")
    for step in ("extract", "transform", "load"):
        print(f"  {step}: ok")
