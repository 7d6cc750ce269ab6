#!/bin/sh
# end_mpi_job (runtime/cuda/process_group_mpi.cc): after a rank fails, cp-profile ends the whole MPI job
# instead of leaving the other ranks waiting in a collective for it. `mpi_group_test --abort-demo` has rank 1
# call end_mpi_job(7) while the other ranks wait in a barrier rank 1 never reaches: the job must end promptly
# with status 7 and the waiting ranks must never pass the barrier.
#   usage: mpi_abort_test.sh MPIEXEC [FLAGS...] MPI_GROUP_TEST
out=$(timeout 120 "$@" --abort-demo 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -eq 124 ]; then
  echo "FAIL: the job still ran after 120 s: end_mpi_job did not end it" >&2
  exit 1
fi
if printf '%s\n' "$out" | grep -q "passed a barrier\|end_mpi_job returned"; then
  echo "FAIL: a rank went on after end_mpi_job" >&2
  exit 1
fi
if [ "$rc" -ne 7 ]; then
  echo "FAIL: the job ended with status $rc, not end_mpi_job's 7" >&2
  exit 1
fi
echo "PASS: rank 1's end_mpi_job(7) ended the job with status 7"
