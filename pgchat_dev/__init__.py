"""pgchat's development tools: they run from a checkout and are not in the wheel.

- demo: `pgchat demo` / `make demo`, the story replayed on the legacy schema and on pgchat;
- scenario: that story (three conversations, two failed messages), shared with the tests;
- bench, bench_adoption, bench_live: `pgchat bench` and its `--adoption` and `--live` modes;
- servers: throwaway PostgreSQL servers for the tests and the benchmarks;
- schema: writes sql/schema.sql from the migrations (`make schema`).

What a backend imports and what the `pgchat` command needs live in the `pgchat` package.
"""
