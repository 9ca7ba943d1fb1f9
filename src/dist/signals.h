// signals.h: the stop requests a batch system sends before it kills a job (SIGTERM at the walltime or on
// preemption, SIGUSR1 from `sbatch --signal=USR1@SECONDS`). The handler only records the signal; the training loop
// looks at iteration boundaries, and all ranks agree there to write a checkpoint and exit cleanly.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

// Installs the handlers for SIGTERM and SIGUSR1 (again: nothing changes, a signal already recorded stays).
void signals_install(void);
// The signal received since signals_install (SIGTERM or SIGUSR1), or 0.
int signals_pending(void);

#ifdef __cplusplus
}
#endif
