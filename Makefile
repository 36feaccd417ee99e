# The two commands a newcomer needs are `make demo` and `make test`; both set up the
# machine first (Debian packages, .venv) through scripts/bootstrap.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: bootstrap test test-interruptions test-ha-lab test-contract test-chaos chaos-report resilience-report coverage demo lint format bench build clean

bootstrap:
	./scripts/bootstrap

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The whole suite: lint, generated files up to date, every test (lab, chaos and the
# interruption matrix and the Patroni cluster lab included: scripts/test_streams.py).
test: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/sparkops check-generated
	$(PY) scripts/test_streams.py $(PYTEST_ARGS)

# Every step of restore, drill and rollback interrupted on the lab by SIGTERM and by a dropped
# SSH connection (7.5 minutes on 2026-12-05), and the cluster runbooks interrupted on the
# Patroni kit: part of `make test`; this runs them alone.
test-interruptions: bootstrap
	$(VENV)/bin/pytest -m interruptions tests/lab/test_interruptions_lab.py tests/ha $(PYTEST_ARGS)

# The site deploy on a Patroni cluster lab (db, db2, app, monitor) and a failover under
# order traffic (docs/ha.md), alone; make test runs it after the other sessions.
test-ha-lab: bootstrap
	$(VENV)/bin/pytest -m ha_lab tests/lab/test_ha_lab.py $(PYTEST_ARGS)

# The consumer pacts of the exchange APIs (written to pacts/; CI keeps them as artefacts).
test-contract: bootstrap
	$(VENV)/bin/pytest -p no:cacheprovider tests/contract $(PYTEST_ARGS)

# The tests that inject failures (killed dispatchers, stopped services).
test-chaos: bootstrap
	$(VENV)/bin/pytest -p no:cacheprovider -m chaos $(PYTEST_ARGS)

# The chaos scenarios (slow, black-holed, lossy, saturated, restarted database) as a table.
chaos-report: bootstrap
	$(PY) bench/chaos_report.py

# Resilience figures for people: the chaos tests as JUnit XML and the restore/rollback
# benchmark (a smaller database than bench's default) in build/resilience/.
resilience-report: bootstrap
	mkdir -p build/resilience
	$(VENV)/bin/pytest -p no:cacheprovider -m chaos --junitxml=build/resilience/chaos.xml $(PYTEST_ARGS)
	$(PY) bench/restore_rollback.py --scale 10 --load-seconds 20 | tee build/resilience/restore_rollback.txt

# Line coverage of the suite without lab hosts (the lab's code runs on other hosts): the whole
# project, then the money code (app/money.py, app/decimals.py; the seed's target is 95 %).
coverage: bootstrap
	mkdir -p build
	COVERAGE_FILE=build/.coverage $(VENV)/bin/pytest -m 'not lab and not interruptions' -p no:cacheprovider --cov --cov-report= $(PYTEST_ARGS)
	COVERAGE_FILE=build/.coverage $(VENV)/bin/coverage report --precision=1 | tail -n 1 | sed 's/^TOTAL/whole project/'
	COVERAGE_FILE=build/.coverage $(VENV)/bin/coverage report --precision=1 --show-missing --include=app/money.py,app/decimals.py

demo: bootstrap
	$(VENV)/bin/sparkops demo

bench: bootstrap
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache .ruff_cache .hypothesis
