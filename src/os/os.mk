# The one place that chooses the OS layer (see os.h). Included by the
# Makefile; `make OS=posix` forces the portable implementation on Linux.
OS ?= $(if $(filter Linux,$(shell uname -s)),linux,posix)
ifeq ($(filter linux posix,$(OS)),)
$(error OS must be linux or posix, not '$(OS)')
endif
OS_SRCS := src/os/common.c src/os/$(OS).c
