# vmpod's build, demo and tests. Everything it needs it installs itself (Debian 12, as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
VMPOD := $(VENV)/bin/vmpod
export VMPOD_KERNEL_CACHE ?= /var/cache/vmpod/kernels

# Debian packages: to run VMs, to build the agent and the kernel, and for the tests' peers.
RUN_PACKAGES := qemu-system-x86 qemu-utils e2fsprogs busybox-static python3-venv kmod
BUILD_PACKAGES := musl-tools gcc make
KERNEL_PACKAGES := linux-source-6.1 flex bison bc libelf-dev libssl-dev lz4 cpio xz-utils
TEST_PACKAGES := tmux docker-registry skopeo umoci apache2-utils openssl podman runc conmon containerd docker.io
BENCH_PACKAGES := podman runc
# The nested Xen harness (make test-xen): Xen, the dom0 kernel and the dom0 rootfs come from Debian's
# archive through these (apt-get download / mmdebstrap), never installed on this machine.
XEN_PACKAGES := mmdebstrap zstd cpio kmod qemu-system-x86

.PHONY: all deps test-deps venv agent kernel stock-kernel demo test lint unit integration test-xen bench clean

all: venv agent

# apt-get only when something is missing, so repeated runs stay fast and offline.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

deps:
	$(call apt_install,$(RUN_PACKAGES) $(BUILD_PACKAGES))

test-deps: deps
	$(call apt_install,$(KERNEL_PACKAGES) $(TEST_PACKAGES))

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

agent/protocol.h: src/vmpod/guest/messages.py src/vmpod/guest/cheader.py
	PYTHONPATH=src python3 -m vmpod.guest.cheader > $@

agent: deps agent/protocol.h
	$(MAKE) -C agent
	install -D -m 0755 agent/build/vmpod-agent src/vmpod/data/vmpod-agent

# The fast guest kernel, built once from Debian's linux-source and cached outside the repo.
kernel: test-deps
	nice kernel/build.sh

# Debian's cloud kernel: a minute to obtain, slower to boot; used until `make kernel` has run.
stock-kernel: deps
	kernel/stock.sh

build/busybox.tar: scripts/busybox-rootfs.sh
	mkdir -p build
	scripts/busybox-rootfs.sh $@

demo: deps venv agent build/busybox.tar
	@ls $(VMPOD_KERNEL_CACHE)/minimal-*/bzImage $(VMPOD_KERNEL_CACHE)/stock-*/vmlinuz >/dev/null 2>&1 || kernel/stock.sh
	$(VMPOD) import --change 'CMD ["/bin/sh"]' build/busybox.tar busybox
	$(VMPOD) run --rm busybox sh -c 'echo "Hello from a VM running kernel $$(uname -r)"; cat /proc/cpuinfo | grep -m1 "model name"'

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

unit: venv agent
	$(MAKE) -C agent test
	$(VENV)/bin/pytest -q tests/unit

integration: venv agent kernel stock-kernel build/busybox.tar
	$(VENV)/bin/pytest -q -n 2 tests/integration

test: test-deps venv agent kernel stock-kernel build/busybox.tar
	$(MAKE) -C agent test
	$(VENV)/bin/pytest -q -n 2 tests
	$(MAKE) test-xen

# Xen as the second hypervisor, verified in a Xen dom0 nested under QEMU TCG (~8 min, plus ~3 to build the
# dom0 rootfs once; at most 40). `test` runs it last, alone, so that no other VM competes with the nested one.
test-xen: test-deps venv agent kernel build/busybox.tar
	$(call apt_install,$(XEN_PACKAGES))
	VMPOD_XEN_TESTS=1 $(VENV)/bin/pytest -q tests/xen

bench: venv agent build/busybox.tar
	$(call apt_install,$(BENCH_PACKAGES))
	$(PY) bench/run_boot.py
	$(PY) bench/run_template.py
	$(PY) bench/run_exec.py
	$(PY) bench/run_memory.py

clean:
	$(MAKE) -C agent clean
	rm -rf build src/vmpod/data/vmpod-agent
