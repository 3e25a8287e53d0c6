# entragate: every command installs what it needs (uv via pip, npm ci) on a fresh machine.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PY := $(UV) run --frozen python
PORT ?= 8787
PYTEST_ARGS ?=

.PHONY: setup policy test test-host test-runtime fuzz mutate demo token dev deploy check bench clean

setup: .venv/.synced node_modules/.installed

.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Compile policies/ (yours: what deploys) into src/compiled_policy.py (also wrangler's [build]).
policy: setup
	$(PY) tools/entragate.py compile

# Your policy's own cases (policies/tests/*.toml) on the policy just compiled, then every layer
# of the product's tests: host (CPython) and runtime (the Worker in workerd under wrangler dev,
# offline), which run on their own policies (examples/policies/), never on yours.
test: policy
	$(PY) tools/entragate.py test
	$(UV) run --frozen pytest $(PYTEST_ARGS)

test-host: setup
	$(UV) run --frozen pytest tests/host $(PYTEST_ARGS)

test-runtime: setup
	$(UV) run --frozen pytest tests/runtime $(PYTEST_ARGS)

# Property-based tests with fresh random examples (make test replays fixed ones), RUNS times.
RUNS ?= 5
fuzz: setup
	for run in $$(seq $(RUNS)); do HYPOTHESIS_PROFILE=explore $(UV) run --frozen pytest tests/host/test_fuzz.py tests/host/test_paths.py tests/host/test_upstream.py $(PYTEST_ARGS) || exit 1; done

# Mutation testing (never part of `make test`; docs/MUTATION.md): mutmut mutates MODULES of
# src/entragate ([tool.mutmut] in pyproject.toml lists every module it may) and runs, per
# mutant, the fast host tests that execute the mutated function. MUTATE_BUDGET: wall-clock
# seconds; results so far are kept in mutants/ and the next run resumes where this one stopped
# (`make clean` starts afresh). Prints the score per module and the survivors.
MODULES ?= tokens claims credential token_cache keys upstream target
MUTATE_BUDGET ?= 4800
MUTATE_JOBS ?= 2
mutate: setup
	timeout $(MUTATE_BUDGET) $(UV) run --frozen mutmut run --max-children $(MUTATE_JOBS) \
		$(foreach module,$(MODULES),"entragate.$(module).*") >mutants.log 2>&1 || test $$? -eq 124
	$(PY) scripts/mutation_report.py $(MODULES)

# Mock Entra tenant + echo origin + the gateway on the examples (examples/policies/, not your
# policies/), offline; prints curl lines and a browser sign-in URL. Ctrl-C stops all.
demo: setup
	$(PY) scripts/demo.py --port $(PORT)

# A test token from the running demo's mock tenant (ARGS=--help for the options).
token: setup
	@$(PY) scripts/mint_token.py $(ARGS)

# The Worker under `wrangler dev` in workerd: `pywrangler dev` with network, the same workerd
# with a locally built Pyodide bundle without (runner/dev.py says which). ARGS: more options.
dev: setup
	$(PY) runner/dev.py --port $(PORT) $(ARGS)

deploy: setup
	$(UV) run --frozen pywrangler deploy

# Offline deploy check: the variables as a deploy reads them, then the Worker's packages vendored
# as pywrangler would and a dry-run deploy.
check: policy
	$(PY) tools/entragate.py config --no-dev-vars
	rm -rf dist
	$(PY) runner/vendor.py
	npx wrangler deploy --dry-run --outdir dist 2>&1 | tee dist.log | grep -E "Total Upload|Error" || true
	@grep -q "Total Upload" dist.log
	@rm -f dist.log

# Benchmarks: prints a table and writes bench-results.json. `$(PY) bench/run.py --docs` also
# writes the figures into docs/BENCHMARKS.md, the one place the docs quote them.
bench: setup
	$(PY) bench/run.py

clean:
	rm -rf python_modules dist build .wrangler/test-workers src/compiled_policy.py mutants mutants.log
