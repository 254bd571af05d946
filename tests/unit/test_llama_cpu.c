/* Unit tests: on a CPU without the SIMD extensions of a GGML_NATIVE
 * llama.cpp build (sl_llama_cpu_check), no public function of the engine
 * runs libggml-cpu's code, which would stop on an illegal instruction.
 * That code starts with ggml_cpu_init, which ggml's backend registry calls
 * the first time anything counts its devices (ggml_backend_cpu_reg). This
 * executable defines ggml_cpu_init (exported: ENABLE_EXPORTS), so that call
 * comes here and is counted instead; the first test shows that it does on
 * a CPU that fits. The check and the backend start once a process: the
 * fitting CPU's case runs in a child. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "sluice/engine.h"
#include "test_util.h"

static int cpu_backend_starts;

void ggml_cpu_init(void);
void ggml_cpu_init(void)
{
    cpu_backend_starts++;
}

/* Counting the GPUs for --parallel 0 starts the CPU backend: the stand-in
 * is reached (else the next test proves nothing). */
static void a_fitting_cpu_starts_the_backend(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsetenv("SLUICE_TEST_CPU_FLAGS");
        if (sl_llama_cpu_check() != SL_OK)
            _exit(3); /* this machine did not build llama.cpp: nothing to compare */
        sl_llama_params p = sl_llama_default_params();
        p.n_gpu_layers = -1;
        (void)sl_llama_default_parallel(&p);
        _exit(cpu_backend_starts == 1 ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 3)
        skip();
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void an_unfit_cpu_runs_none_of_it(void **state)
{
    (void)state;
    setenv("SLUICE_TEST_CPU_FLAGS", "fpu", 1); /* none of the SIMD extensions */
    if (sl_llama_cpu_check() == SL_OK)
        skip(); /* not a GGML_NATIVE build: sluice checks nothing */
    assert_int_equal(sl_llama_cpu_check(), SL_ERR_MODEL);
    sl_llama_init();
    sl_llama_params p = sl_llama_default_params();
    p.n_gpu_layers = -1; /* offload all that a GPU would take: looks for one */
    assert_int_equal(sl_llama_default_parallel(&p), 4);
    p.n_parallel = 7;
    assert_int_equal(sl_llama_default_parallel(&p), 7);
    tu_tiny tiny = tu_tiny_files();
    p.model_path = tiny.model;
    uint64_t per_pos = 0;
    assert_int_equal(sl_llama_kv_bytes_per_position(&p, &per_pos), SL_ERR_MODEL);
    int n = 0;
    assert_int_equal(sl_llama_parallel_for_memory(&p, 1ull << 30, 256, &n), SL_ERR_MODEL);
    assert_int_equal(cpu_backend_starts, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_fitting_cpu_starts_the_backend),
        cmocka_unit_test(an_unfit_cpu_runs_none_of_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
