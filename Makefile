# Two commands matter: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test e2e bench lint clean api-fuzz

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP)
	$(BIN)/crm dev

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

# schemathesis against the API's OpenAPI document with many examples per operation (the suite runs a few).
api-fuzz: $(STAMP)
	API_FUZZ_EXAMPLES=$${API_FUZZ_EXAMPLES:-200} $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_api_schema.py

lint: $(STAMP)
	$(BIN)/ruff check crm campaigns workers feedback tracking reports api outbound tests bench

clean:
	rm -rf $(VENV) .pytest_cache test-output
