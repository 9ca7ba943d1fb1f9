// signals.c: records SIGTERM / SIGUSR1 for the training loop (signals.h). The handler does nothing but store the
// signal number, which is all a handler may safely do.
#include "signals.h"

#include <signal.h>
#include <string.h>

#include "../core/common.h"

static volatile sig_atomic_t g_signal = 0;

static void on_signal(int sig) { g_signal = sig; }

void signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; // interrupted reads and writes resume; the loop checks the flag between iterations
    CHECK(sigaction(SIGTERM, &sa, NULL) == 0 && sigaction(SIGUSR1, &sa, NULL) == 0, "", "sigaction failed");
}

int signals_pending(void) { return g_signal; }
