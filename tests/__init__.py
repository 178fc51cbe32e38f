import os

# The suite runs in two processes (pytest-xdist, one test file each at a time) on two cores: each
# process, and every subprocess a test starts (which inherits this), runs torch on one thread. Set
# here, before any test module imports torch. One thread count everywhere also makes an in-process
# run and a subprocess run round convolutions alike.
os.environ.setdefault("OMP_NUM_THREADS", "1")
