"""The harness is both the ground floor and the roof of plasticity-bench; tasks and trainers live
between them, reports just under the top. A module imports only from floors below its own
(pyproject.toml's import-linter contract checks it: `lint-imports`). From the top:

    roof      harness.app          the `bench` commands: config, the run's stages, studies
              reports              the pages, tables and charts of a run and of a study
              harness.evaluation   scoring, KL, statistics, the gate, claims
    between   trainers             the post-training methods
              tasks                suites, sources, scorers, prompts
    ground    harness.backends | harness.store | harness.sandbox
                                   generation engines, the run folder on disk, the program sandbox
              harness.core         items, errors, options, registries: imports nothing of the project

Tasks and trainers import the ground (core, store, backends, sandbox); the roof (evaluation,
reports, app) imports them.
"""
