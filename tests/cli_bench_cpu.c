// cli_bench_cpu.c: `drtune bench cpu` as a user runs it: drtune's rows time and print a table; the PyTorch side's
// protocol (alternate calls, the ratio column, its failures as one-line errors) through a stand-in script that
// answers like tools/reference/bench_cpu.py; and, when tools/reference/.venv exists, one row against real PyTorch.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

// The number in column `col` (0: the label, 1: threads, 2: drtune s, 3: PyTorch s, 4: the ratio) of the table line
// for label and threads; -1 when there is none.
static double table_cell(const char *out, const char *label, int threads, int col) {
    char head[256];
    snprintf(head, sizeof head, "| %s | %d |", label, threads);
    const char *p = out ? strstr(out, head) : NULL;
    if (!p) return -1.0;
    for (int c = 0; c < col; c++) {
        p = strchr(p + 1, '|');
        if (!p) return -1.0;
    }
    return atof(p + 1);
}

int main(void) {
    char args[4096];
    const char *tmp = tu_tmpdir("bench_cpu");
    { // drtune alone: every small row prints a positive time
        TuChild c;
        int rc = tu_run_drtune("bench cpu --rows iter,sample,sd15-small-fwd --threads 1 --reps 1", &c);
        double it = table_cell(c.out, "one DRTune iteration of the default job (small model, LoRA)", 1, 2);
        double sa = table_cell(c.out, "sampling the small model, 4 prompts", 1, 2);
        double fw = table_cell(c.out, "reduced-width SD 1.5 UNet, forward", 1, 2);
        tu_check(rc == 0 && it > 0 && sa > 0 && fw > 0, "drtune rows timed: iteration %.3f s, sampling %.3f s, "
                 "reduced-width forward %.3f s (exit %d)", it, sa, fw, rc);
        tu_child_free(&c);
    }
    { // a stand-in PyTorch side: 0.25 s per call, so the ratio column is 0.25 / drtune's time
        const char *fake = tu_path("fake_torch.sh");
        const char *log = tu_path("fake_torch.log");
        char script[1024];
        snprintf(script, sizeof script,
                 "while read cmd row threads; do echo \"$cmd $row $threads\" >> '%s'\n"
                 "  case $cmd in info) echo 'ok stand-in 1.0';; time) echo 'ok 0.25';; drop) echo ok;;\n"
                 "  quit) exit 0;; *) echo 'err unknown';; esac; done\n", log);
        tu_write_text(fake, script);
        snprintf(args, sizeof args, "bench cpu --rows sample --threads 1 --reps 3 --torch /bin/sh --torch-script %s",
                 fake);
        TuChild c;
        int rc = tu_run_drtune(args, &c);
        double ours = table_cell(c.out, "sampling the small model, 4 prompts", 1, 2);
        double theirs = table_cell(c.out, "sampling the small model, 4 prompts", 1, 3);
        double ratio = table_cell(c.out, "sampling the small model, 4 prompts", 1, 4);
        tu_check(rc == 0 && theirs == 0.25 && ours > 0 && ratio > 0.99 * 0.25 / ours - 0.01 &&
                     ratio < 1.01 * 0.25 / ours + 0.01,
                 "stand-in PyTorch side: its 0.250 s and the ratio %.2f = 0.25 / %.3f", ratio, ours);
        char *sent = tu_read_all(log, NULL);
        // info, then the warm-up and three timed calls, then drop and quit
        tu_check(sent && !strcmp(sent, "info  \ntime sample 1\ntime sample 1\ntime sample 1\ntime sample 1\n"
                                       "drop sample \nquit  \n"),
                 "commands sent to the PyTorch side, in order (got:\n%s)", sent ? sent : "(none)");
        free(sent);
        tu_child_free(&c);

        tu_write_text(fake, "read cmd; echo 'err ModuleNotFoundError: No module named diffusers'\n");
        rc = tu_run_drtune(args, &c);
        tu_check(tu_is_user_error(&c, "No module named diffusers"), "a failing PyTorch side: one-line error");
        tu_child_free(&c);
        tu_write_text(fake, "exit 3\n");
        rc = tu_run_drtune(args, &c);
        tu_check(tu_is_user_error(&c, "ended without answering"), "a PyTorch side that exits: one-line error");
        tu_child_free(&c);
        (void)rc;
    }
    {
        TuChild c;
        tu_run_drtune("bench cpu --torch /nonexistent/python", &c);
        tu_check(tu_is_user_error(&c, "cannot run it"), "--torch that cannot run: one-line error");
        tu_child_free(&c);
        tu_run_drtune("bench cpu --rows iter,nope", &c);
        tu_check(tu_is_user_error(&c, "unknown row 'nope'"), "--rows with an unknown row: one-line error");
        tu_child_free(&c);
        tu_run_drtune("bench cpu --threads 1,0", &c);
        tu_check(tu_is_user_error(&c, "--threads"), "--threads 0: one-line error");
        tu_child_free(&c);
    }
    if (access("tools/reference/.venv/bin/python", X_OK) == 0) { // the real PyTorch side, where it is installed
        TuChild c;
        int rc = tu_run_drtune("bench cpu --rows sd15-small-fwd --threads 1 --reps 1 "
                               "--torch tools/reference/.venv/bin/python", &c);
        double theirs = table_cell(c.out, "reduced-width SD 1.5 UNet, forward", 1, 3);
        tu_check(rc == 0 && theirs > 0, "PyTorch's reduced-width forward timed: %.3f s (exit %d)", theirs, rc);
        tu_child_free(&c);
    } else {
        printf("skip the real PyTorch row: tools/reference/.venv is not installed\n");
    }
    (void)tmp;
    return tu_report();
}
