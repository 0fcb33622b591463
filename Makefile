# The two commands: `make demo` and `make test` (both create .venv when missing).
VENV ?= .venv
PY := $(VENV)/bin/python
HEIMDALL := $(VENV)/bin/heimdall
DEMO ?= demo-out
COV_MIN ?= 85

.PHONY: install demo test test-fast lint format bench clean vendor browser screenshot aprs-decoders
VENDOR := src/heimdall/serve/static/vendor

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: $(VENV)/.installed vendor aprs-decoders

# APRS decoders for `heimdall data label` and its tests (Debian packages direwolf, multimon-ng).
aprs-decoders:
	@command -v atest >/dev/null && command -v multimon-ng >/dev/null || \
		(command -v apt-get >/dev/null && apt-get update && apt-get install -y direwolf multimon-ng) || \
		(echo "install the Debian packages 'direwolf' and 'multimon-ng' (APRS decoders)" >&2; exit 1)

# Map page assets from npm (exact versions in web/package-lock.json), copied into the package.
$(VENDOR)/.copied: web/package.json web/package-lock.json
	command -v npm >/dev/null || (apt-get update && apt-get install -y npm)
	cd web && npm ci --no-audit --no-fund --ignore-scripts
	mkdir -p $(VENDOR)/images
	cp web/node_modules/leaflet/dist/leaflet.js web/node_modules/leaflet/dist/leaflet.css $(VENDOR)/
	cp web/node_modules/leaflet/dist/images/*.png $(VENDOR)/images/
	cp web/node_modules/topojson-client/dist/topojson-client.min.js $(VENDOR)/
	cp web/node_modules/world-atlas/countries-50m.json $(VENDOR)/
	for p in leaflet topojson-client world-atlas; do cp web/node_modules/$$p/LICENSE $(VENDOR)/LICENSE-$$p; done
	touch $@

vendor: $(VENDOR)/.copied

# Headless Chromium and its WebDriver (Debian) for the map page's browser test and screenshot.
browser:
	command -v chromium >/dev/null && test -x /usr/bin/chromedriver || \
		(apt-get update && apt-get install -y chromium chromium-driver)

screenshot: install browser
	$(PY) scripts/map_screenshot.py docs/map-page.png $(if $(MODEL),--model $(MODEL))

demo: install
	bash scripts/demo.sh $(DEMO)

test: install browser lint
	$(PY) -m pytest --cov=heimdall --cov-report=term:skip-covered --cov-fail-under=$(COV_MIN) -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -m "not slow" -x -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: install
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

clean:
	rm -rf $(DEMO) mlruns.db mlruns mlartifacts .pytest_cache .coverage
