/* cli/main.c — the sluice command: parses arguments, calls libsluice's
 * public API, prints progress and a summary. Nothing here but the CLI.
 *
 * Exit status: 0 every row succeeded; 3 the run finished but some rows
 * failed (they are in the output with their error); 2 a wrong command line
 * or configuration; 1 the run could not finish; 130 stopped by a signal
 * (the rows finished before it are in the output). */
#include <errno.h>
#include <execinfo.h>
#include <signal.h>
#include <stdatomic.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/printer.h"
#include "sluice/sluice.h"

enum { EXIT_ROWS_FAILED = 3, EXIT_USAGE = 2, EXIT_RUN = 1, EXIT_STOPPED = 130 };

/* SIGINT/SIGTERM: the first stops reading and finishes the rows in flight,
 * the second stops at once. The executor polls this counter. */
static atomic_int stop_requests;

static void on_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&stop_requests, 1);
}

/* A crash (a bug in sluice or a library it calls) says so on stderr with a
 * backtrace before dying of the same signal, so that a log from a long run
 * or a CI job shows where. Not under ASan/TSan: their own reports are
 * better. */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
static void on_crash(int sig)
{
    const char *name = sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" :
                       sig == SIGFPE ? "SIGFPE" : sig == SIGILL ? "SIGILL" : "SIGABRT";
    static const char head[] = "sluice: crashed (", tail[] = "); backtrace:\n";
    void *frames[64];
    int n = backtrace(frames, 64);
    (void)!write(STDERR_FILENO, head, sizeof head - 1);
    (void)!write(STDERR_FILENO, name, strlen(name));
    (void)!write(STDERR_FILENO, tail, sizeof tail - 1);
    backtrace_symbols_fd(frames, n, STDERR_FILENO);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void report_crashes(void)
{
    static char alt_stack[64 * 1024]; /* a stack overflow still reports */
    stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack};
    sigaltstack(&ss, NULL);
    void *warm[1];
    backtrace(warm, 1); /* loads libgcc now, not inside the handler */
    struct sigaction sa = {.sa_handler = on_crash, .sa_flags = SA_ONSTACK | SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof fatal / sizeof *fatal; i++)
        sigaction(fatal[i], &sa, NULL);
}
#else
static void report_crashes(void) {}
#endif

/* Several strings: ISO C caps a string literal at 4095 bytes. */
static const char usage_head[] =
    "usage: sluice caption INPUT... -o OUTPUT_DIR --model M.gguf --mmproj P.gguf [options]\n"
    "       sluice caption INPUT... -o OUTPUT_DIR --engine openai --endpoint URL [options]\n"
    "\n"
    "Caption every image of the inputs with a vision-language model and write one\n"
    "row per image to OUTPUT_DIR/part-NNNNN.jsonl (or .parquet). An INPUT is a folder\n"
    "(searched recursively), a manifest (.jsonl or .csv naming files or URLs),\n"
    "WebDataset tar shards (.tar) or Parquet files (.parquet); braces and globs\n"
    "expand: 'shards/data-{000..127}.tar', 'hf/*.parquet' (docs/inputs.md).\n"
    "Interrupted (crash, kill, Ctrl-C)? Run the same command again: it goes on where\n"
    "it stopped, every input in exactly one row (a ledger in OUTPUT_DIR keeps track).\n"
    "\n"
    "Input:\n"
    "      --input-format F      folder, jsonl, csv, webdataset or parquet (default: by name)\n"
    "      --include GLOB        folders: only relative paths matching GLOB (repeatable)\n"
    "      --exclude GLOB        folders: skip relative paths matching GLOB (repeatable)\n"
    "      --image-column NAME   manifest/Parquet column with the image path, URL or\n"
    "                            struct (default: image, path or url)\n"
    "      --prompt-column NAME  a row's value in this column replaces --prompt (default: prompt)\n"
    "      --allow-file-urls     read file:// URLs found in data (refused by default)\n"
    "      --max-download-bytes SIZE  largest http(s) image fetched (default: 64M)\n"
    "      --download-timeout S  seconds per http(s) image try, whole transfer (default: 30)\n"
    "      --download-retries N  tries after the first on a network error, 5xx or 429 (default: 2)\n"
    "      --input-shard I/N     read only input shards I, I+N, I+2N, ... so that N runs\n"
    "                            (0/N .. N-1/N, e.g. a Slurm array) split the work exactly;\n"
    "                            a shard is one input file, or 1000 items (--input-shard-size)\n"
    "\n";

static const char usage_text[] =
    "Model:\n"
    "  -m, --model PATH          language model GGUF, or hf://ORG/REPO[/FILE.gguf] to fetch\n"
    "                            it (and its mmproj) from the Hugging Face hub into the\n"
    "                            cache ($HF_HOME; $HF_ENDPOINT, $HF_TOKEN, $HF_HUB_OFFLINE)\n"
    "      --mmproj PATH         vision projector GGUF (mmproj), or hf://ORG/REPO/FILE.gguf\n"
    "      --parallel N          sequences decoded together per replica (default: 4)\n"
    "      --ctx N               context positions per sequence (default: sized for the\n"
    "                            prompt, the image and --max-tokens)\n"
    "      --threads N           CPU threads (default: all cores)\n"
    "      --gpu-layers N        layers offloaded to a GPU build (default: all)\n"
    "      --gpus LIST           one replica per GPU, e.g. 0,1,2,3: each loads the model\n"
    "                            and vision encoder on its own device (CUDA builds)\n"
    "      --cpu-poll N          0..100: how hard CPU threads spin between ops (default 50;\n"
    "                            lower it when the cores are shared with other work)\n";

static const char usage_rest_text[] =
    "Prompt and generation:\n"
    "  -p, --prompt TEXT         user prompt (default: \"Describe this image in one sentence.\")\n"
    "      --system TEXT         system prompt (default: none)\n"
    "  -n, --max-tokens N        tokens to generate at most (default: 64)\n"
    "      --temperature F       0 is greedy (default: 0)\n"
    "      --top-p F  --top-k N  --min-p F  --repeat-penalty F\n"
    "      --seed N              job seed; each row's seed mixes it with the row id (default: 0)\n"
    "      --stop TEXT           end generation at TEXT (not written); repeatable, up to 16\n"
    "Pipeline:\n"
    "      --decode-workers N    image decode threads (default: 2)\n"
    "      --replicas N          engine instances, each with its own model (default: 1)\n"
    "      --ordered             write rows in input order (default: as they finish)\n"
    "      --memory-budget SIZE  bytes in flight at most, e.g. 512M, 4G (default: 1/4 of RAM)\n"
    "      --max-failed F        stop when more than this fraction (0.1 or 10%) of rows fail\n"
    "      --limit N             try the job on a slice: at most N rows (not done before), then\n"
    "                            stop; the same command without it goes on from there\n"
    "      --sample F            only the rows whose id hashes below F (0.01 or 1%): the same\n"
    "                            rows every time; without it, a rerun does the others\n"
    ;

static const char usage_tail[] =
    "Images:\n"
    "      --max-image-edge N    shrink so the longer edge is at most N px (default: 512; 0 keeps)\n"
    "      --max-image-pixels N  refuse images larger than N pixels, read from the header\n"
    "                            before decoding (default: 100000000)\n"
    "      --background RRGGBB   colour transparent pixels are flattened onto (default: ffffff)\n"
    "Monitoring:\n"
    "      --metrics-addr H:P    serve Prometheus /metrics there (default: 127.0.0.1:9797;\n"
    "                            port 0 picks a free one; 'off' disables). The final values\n"
    "                            are written to OUTPUT_DIR/metrics.prom either way. The\n"
    "                            same address serves a live page at / (progress, engine\n"
    "                            figures, the latest images with their captions).\n"
    "Output:\n"
    "  -o, --output DIR          output folder (created if missing); beside the rows go\n"
    "                            summary.json (counts, time per stage,\n"
    "                            tokens, failures by class) and report.html (a sample of\n"
    "                            the images with their captions, self-contained).\n"
    "      --format F            jsonl (default) or parquet (zstd; pyarrow, DuckDB, HF datasets)\n"
    "      --overwrite           start over: remove OUTPUT_DIR's part files and resume\n"
    "                            ledger (default: the same command resumes; other\n"
    "                            settings in a used folder are refused)\n"
    "      --columns A,B,...     pass only these input columns through (default: all;\n"
    "                            Parquet types come from the first 100 rows)\n"
    "      --include-image-bytes Parquet: the original image bytes in column image_bytes\n"
    "      --shard-rows N        start a new part-NNNNN file every N rows (default: 10000);\n"
    "                            each part is a resume point: a crash loses at most N rows\n"
    "      --show N              print the first N captions (default: 5)\n"
    "  -q, --quiet               print only errors\n"
    "      --progress-every S    seconds between progress lines when stderr is not a\n"
    "                            terminal (default: 10; a terminal redraws every second)\n"
    "  -v, --verbose             print llama.cpp's messages too\n"
    "  -h, --help                this text\n"
    "      --version             print the version\n"
    "\n"
    "Exit status: 0 all rows ok, 3 some rows failed (see their \"error\" field),\n"
    "2 wrong command line or configuration, 1 the run could not finish, 130 stopped\n"
    "by SIGINT/SIGTERM (a first signal finishes the rows in flight, a second stops at once).\n";

static const char usage_openai_text[] =
    "OpenAI-compatible servers (vLLM, SGLang, llama-server; see docs/openai.md):\n"
    "      --engine E            llama (default: in-process) or openai (HTTP servers)\n"
    "      --endpoint URL        a server, e.g. http://10.0.0.7:8000; repeatable\n"
    "      --endpoints-file F    more servers, one URL a line (# comments)\n"
    "      --served-model NAME   the request's model (default: the first of GET /v1/models)\n"
    "      --api-key-env VAR     send the key held in environment variable VAR\n"
    "      --max-in-flight N     requests outstanding per endpoint (default: 8)\n"
    "      --adaptive            raise or lower that limit with measured throughput\n"
    "      --adaptive-max N      the most it may raise it to (default: 64)\n"
    "      --request-timeout S   seconds per attempt (default: 600)\n"
    "      --max-attempts N      tries per row on errors worth retrying (default: 8)\n"
    "      --endpoint-failures N failures in a row that take an endpoint out (default: 3)\n"
    "      --endpoint-cooldown S seconds out of rotation after them (default: 15)\n"
    "      --give-up-after S     stop the job once every endpoint has failed this long,\n"
    "                            or no request got an answer this long (endless 429s)\n"
    "                            (default: 120); the rows finished are kept\n"
    "      --jpeg-edge PX        longer edge of the JPEG sent (default: as decoded)\n"
    "      --jpeg-quality Q      its quality, 1..100 (default: 90)\n"
    "      --send-original       send JPEG and PNG inputs as they are, not re-encoded (the\n"
    "                            server sees the original file; other formats: the JPEG)\n"
    "      --response-format F   a JSON file sent as response_format (e.g. a JSON schema)\n"
    "      --stream              stream answers (server-sent events): TTFT and inter-token\n"
    "                            latency per endpoint in the vllm:* metrics\n";

static void print_usage(FILE *fp)
{
    fputs(usage_head, fp);
    fputs(usage_text, fp);
    fputs(usage_openai_text, fp);
    fputs(usage_rest_text, fp);
    fputs(usage_tail, fp);
}

static int usage_error(const char *what, const char *detail)
{
    fprintf(stderr, "sluice: %s%s\nRun 'sluice caption --help' for the options.\n", what,
            detail ? detail : "");
    return EXIT_USAGE;
}

static int parse_long(const char *flag, const char *text, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        char range[96];
        snprintf(range, sizeof range, "an integer from %ld to %ld", min, max);
        fprintf(stderr, "sluice: %s expects %s, got '%s'\n", flag, range, text);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *flag, const char *text, double min, double max, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= min && v <= max)) {
        fprintf(stderr, "sluice: %s expects a number from %g to %g, got '%s'\n", flag, min, max,
                text);
        return -1;
    }
    *out = (float)v;
    return 0;
}

/* "512M", "4G", "1048576" -> bytes. */
static int parse_size(const char *flag, const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    double mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1024.0; end++; break;
    case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (errno || end == text || *end || !(v * mult >= 1024 * 1024)) {
        fprintf(stderr, "sluice: %s expects a size of at least 1M such as 512M or 4G, got '%s'\n",
                flag, text);
        return -1;
    }
    *out = (uint64_t)(v * mult);
    return 0;
}

/* "0.1" or "10%" -> 0.1 */
static int parse_fraction(const char *flag, const char *text, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (*end == '%') {
        v /= 100.0;
        end++;
    }
    if (errno || end == text || *end || !(v >= 0.0 && v <= 1.0)) {
        fprintf(stderr, "sluice: %s expects a fraction from 0 to 1 or a percentage, got '%s'\n",
                flag, text);
        return -1;
    }
    *out = v;
    return 0;
}

enum {
    OPT_MMPROJ = 256, OPT_CTX, OPT_THREADS, OPT_GPU_LAYERS, OPT_SYSTEM, OPT_TEMPERATURE,
    OPT_TOP_P, OPT_TOP_K, OPT_MIN_P, OPT_REPEAT_PENALTY, OPT_SEED, OPT_MAX_EDGE,
    OPT_MAX_PIXELS, OPT_OVERWRITE, OPT_SHOW, OPT_VERSION, OPT_DECODE_WORKERS, OPT_REPLICAS,
    OPT_ORDERED, OPT_MEMORY_BUDGET, OPT_MAX_FAILED, OPT_PARALLEL, OPT_METRICS_ADDR, OPT_CPU_POLL,
    OPT_STOP, OPT_PROGRESS_EVERY, OPT_FORMAT, OPT_INPUT_FORMAT, OPT_INCLUDE, OPT_EXCLUDE,
    OPT_IMAGE_COLUMN, OPT_PROMPT_COLUMN, OPT_ALLOW_FILE_URLS, OPT_MAX_DOWNLOAD, OPT_DOWNLOAD_TIMEOUT, OPT_DOWNLOAD_RETRIES,
    OPT_COLUMNS,
    OPT_IMAGE_BYTES, OPT_SHARD_ROWS, OPT_GPUS, OPT_INPUT_SHARD, OPT_INPUT_SHARD_SIZE,
    OPT_ENGINE, OPT_ENDPOINT, OPT_ENDPOINTS_FILE,
    OPT_SERVED_MODEL, OPT_API_KEY_ENV, OPT_MAX_IN_FLIGHT, OPT_ADAPTIVE, OPT_REQUEST_TIMEOUT,
    OPT_MAX_ATTEMPTS, OPT_COOLDOWN, OPT_GIVE_UP, OPT_JPEG_EDGE, OPT_JPEG_QUALITY, OPT_RESPONSE_FORMAT,
    OPT_STREAM, OPT_SEND_ORIGINAL, OPT_ADAPTIVE_MAX, OPT_ENDPOINT_FAILURES,
    OPT_LIMIT, OPT_SAMPLE,
};
enum { OPT_BACKGROUND = 512 };

/* "RRGGBB" or "#RRGGBB" (hex) -> three bytes. */
static int parse_rgb(const char *flag, const char *text, uint8_t rgb[3])
{
    const char *hex = text[0] == '#' ? text + 1 : text;
    unsigned v[3];
    if (strlen(hex) != 6 || strspn(hex, "0123456789abcdefABCDEF") != 6 ||
        sscanf(hex, "%2x%2x%2x", &v[0], &v[1], &v[2]) != 3) {
        fprintf(stderr, "sluice: %s expects a colour as RRGGBB hex (e.g. ffffff), got '%s'\n",
                flag, text);
        return -1;
    }
    for (int i = 0; i < 3; i++)
        rgb[i] = (uint8_t)v[i];
    return 0;
}

/* "I/N" with 0 <= I < N. */
static bool parse_input_shard(const char *arg, unsigned *index, unsigned *count)
{
    char *slash, *end;
    errno = 0;
    unsigned long i = strtoul(arg, &slash, 10);
    unsigned long n = *slash == '/' ? strtoul(slash + 1, &end, 10) : 0;
    if (errno || slash == arg || *slash != '/' || end == slash + 1 || *end || n == 0 ||
        n > 1000000 || i >= n || arg[0] == '-' || slash[1] == '-') {
        fprintf(stderr, "sluice: --input-shard takes I/N with 0 <= I < N, e.g. 0/8; got '%s'\n",
                arg);
        return true;
    }
    *index = (unsigned)i;
    *count = (unsigned)n;
    return false;
}

/* "0,1,3": device indexes, each once. */
static bool parse_gpus(const char *arg, int *gpus, int *n)
{
    *n = 0;
    const char *s = arg;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > 1023 || (*end && *end != ',') || *n == 64)
            goto bad;
        for (int i = 0; i < *n; i++)
            if (gpus[i] == v)
                goto bad;
        gpus[(*n)++] = (int)v;
        s = *end ? end + 1 : end;
        if (*end && !*s)
            goto bad;
    }
    if (*n > 0)
        return false;
bad:
    fprintf(stderr, "sluice: --gpus takes distinct device numbers separated by commas, e.g. "
                    "0,1,2,3; got '%s'\n", arg);
    return true;
}

/* hf:// references become cached local files before the run starts. A
 * hub model brings its repository's projector unless --mmproj names one.
 * Returns 0 or the exit status. */
static int fetch_from_hub(const char **model, const char **mmproj, sl_hub_files *model_files,
                          sl_hub_files *projector_files, bool quiet)
{
    sl_status st = SL_OK;
    if (sl_hub_is_ref(*model)) {
        if (!quiet)
            fprintf(stderr, "sluice: fetching %s\n", *model);
        const char *projector_ref = !*mmproj ? NULL : sl_hub_is_ref(*mmproj) ? *mmproj : "";
        if ((st = sl_hub_fetch(*model, projector_ref, NULL, model_files)) == SL_OK) {
            *model = model_files->model;
            if (projector_ref)
                *mmproj = sl_hub_is_ref(*mmproj) ? model_files->mmproj : *mmproj;
            else if (model_files->mmproj[0])
                *mmproj = model_files->mmproj;
        }
    } else if (*mmproj && sl_hub_is_ref(*mmproj)) {
        if (!quiet)
            fprintf(stderr, "sluice: fetching %s\n", *mmproj);
        if ((st = sl_hub_fetch(*mmproj, "", NULL, projector_files)) == SL_OK)
            *mmproj = projector_files->model;
    }
    if (st == SL_OK)
        return 0;
    fprintf(stderr, "sluice: %s\n", sl_last_error());
    return st == SL_ERR_IO || st == SL_ERR_NOMEM ? EXIT_RUN : EXIT_USAGE;
}

enum { MAX_ENDPOINTS = 1024 };

/* A whole (small) file as a string; NULL with a message on failure. */
static char *read_text_file(const char *flag, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "sluice: %s '%s': %s\n", flag, path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 8192;
            char *grown = realloc(buf, cap);
            if (!grown)
                break;
            buf = grown;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, fp);
        len += n;
        if (n == 0)
            break;
    }
    fclose(fp);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* --endpoints-file: one URL a line; blank lines and # comments skipped.
 * The strings point into the file's text, which is added to texts[] (the
 * caller frees them all when the run is over: several files may be given). */
static int read_endpoints(const char *path, const char **eps, int *n, char **texts, int *n_texts)
{
    if (*n_texts == MAX_ENDPOINTS) {
        fprintf(stderr, "sluice: at most %d --endpoints-file\n", MAX_ENDPOINTS);
        return -1;
    }
    char *text = texts[(*n_texts)++] = read_text_file("--endpoints-file", path);
    if (!text)
        return -1;
    for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        while (*line == ' ' || *line == '\t')
            line++;
        char *end = line + strlen(line);
        while (end > line && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (!*line || *line == '#')
            continue;
        if (*n == MAX_ENDPOINTS) {
            fprintf(stderr, "sluice: at most %d endpoints\n", MAX_ENDPOINTS);
            return -1;
        }
        eps[(*n)++] = line;
    }
    return 0;
}

static int caption_with(sl_caption_params *pp, printer *prp, int verbose, int argc, char **argv,
                        const char **stops, int n_stop);

static void free_all(char **texts, int n)
{
    for (int i = 0; i < n; i++)
        free(texts[i]);
}

static int cmd_caption(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"mmproj", required_argument, 0, OPT_MMPROJ},
        {"ctx", required_argument, 0, OPT_CTX},
        {"parallel", required_argument, 0, OPT_PARALLEL},
        {"threads", required_argument, 0, OPT_THREADS},
        {"gpu-layers", required_argument, 0, OPT_GPU_LAYERS},
        {"gpus", required_argument, 0, OPT_GPUS},
        {"cpu-poll", required_argument, 0, OPT_CPU_POLL},
        {"prompt", required_argument, 0, 'p'},
        {"system", required_argument, 0, OPT_SYSTEM},
        {"max-tokens", required_argument, 0, 'n'},
        {"temperature", required_argument, 0, OPT_TEMPERATURE},
        {"top-p", required_argument, 0, OPT_TOP_P},
        {"top-k", required_argument, 0, OPT_TOP_K},
        {"min-p", required_argument, 0, OPT_MIN_P},
        {"repeat-penalty", required_argument, 0, OPT_REPEAT_PENALTY},
        {"seed", required_argument, 0, OPT_SEED},
        {"stop", required_argument, 0, OPT_STOP},
        {"max-image-edge", required_argument, 0, OPT_MAX_EDGE},
        {"max-image-pixels", required_argument, 0, OPT_MAX_PIXELS},
        {"background", required_argument, 0, OPT_BACKGROUND},
        {"decode-workers", required_argument, 0, OPT_DECODE_WORKERS},
        {"replicas", required_argument, 0, OPT_REPLICAS},
        {"ordered", no_argument, 0, OPT_ORDERED},
        {"memory-budget", required_argument, 0, OPT_MEMORY_BUDGET},
        {"max-failed", required_argument, 0, OPT_MAX_FAILED},
        {"metrics-addr", required_argument, 0, OPT_METRICS_ADDR},
        {"output", required_argument, 0, 'o'},
        {"format", required_argument, 0, OPT_FORMAT},
        {"overwrite", no_argument, 0, OPT_OVERWRITE},
        {"show", required_argument, 0, OPT_SHOW},
        {"quiet", no_argument, 0, 'q'},
        {"progress-every", required_argument, 0, OPT_PROGRESS_EVERY},
        {"input-format", required_argument, 0, OPT_INPUT_FORMAT},
        {"include", required_argument, 0, OPT_INCLUDE},
        {"exclude", required_argument, 0, OPT_EXCLUDE},
        {"image-column", required_argument, 0, OPT_IMAGE_COLUMN},
        {"prompt-column", required_argument, 0, OPT_PROMPT_COLUMN},
        {"allow-file-urls", no_argument, 0, OPT_ALLOW_FILE_URLS},
        {"max-download-bytes", required_argument, 0, OPT_MAX_DOWNLOAD},
        {"download-timeout", required_argument, 0, OPT_DOWNLOAD_TIMEOUT},
        {"download-retries", required_argument, 0, OPT_DOWNLOAD_RETRIES},
        {"columns", required_argument, 0, OPT_COLUMNS},
        {"include-image-bytes", no_argument, 0, OPT_IMAGE_BYTES},
        {"shard-rows", required_argument, 0, OPT_SHARD_ROWS},
        {"limit", required_argument, 0, OPT_LIMIT},
        {"sample", required_argument, 0, OPT_SAMPLE},
        {"input-shard", required_argument, 0, OPT_INPUT_SHARD},
        {"input-shard-size", required_argument, 0, OPT_INPUT_SHARD_SIZE},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {"engine", required_argument, 0, OPT_ENGINE},
        {"endpoint", required_argument, 0, OPT_ENDPOINT},
        {"endpoints-file", required_argument, 0, OPT_ENDPOINTS_FILE},
        {"served-model", required_argument, 0, OPT_SERVED_MODEL},
        {"api-key-env", required_argument, 0, OPT_API_KEY_ENV},
        {"max-in-flight", required_argument, 0, OPT_MAX_IN_FLIGHT},
        {"adaptive", no_argument, 0, OPT_ADAPTIVE},
        {"adaptive-max", required_argument, 0, OPT_ADAPTIVE_MAX},
        {"endpoint-failures", required_argument, 0, OPT_ENDPOINT_FAILURES},
        {"request-timeout", required_argument, 0, OPT_REQUEST_TIMEOUT},
        {"max-attempts", required_argument, 0, OPT_MAX_ATTEMPTS},
        {"endpoint-cooldown", required_argument, 0, OPT_COOLDOWN},
        {"give-up-after", required_argument, 0, OPT_GIVE_UP},
        {"jpeg-edge", required_argument, 0, OPT_JPEG_EDGE},
        {"jpeg-quality", required_argument, 0, OPT_JPEG_QUALITY},
        {"response-format", required_argument, 0, OPT_RESPONSE_FORMAT},
        {"stream", no_argument, 0, OPT_STREAM},
        {"send-original", no_argument, 0, OPT_SEND_ORIGINAL},
        {0, 0, 0, 0},
    };
    sl_caption_params p = sl_caption_default_params();
    p.metrics_addr = "127.0.0.1:9797";
    p.metrics_optional = true; /* the default address may be taken: then run without it */
    printer pr = {.show = 5, .tty = isatty(STDERR_FILENO), .line_every = 10.0};
    int verbose = 0;
    const char *stops[16];
    static int gpus[64];
    bool replicas_given = false, adaptive_max_given = false;
    int n_stop = 0;
    const char *includes[64], *excludes[64], *columns[256];
    int n_include = 0, n_exclude = 0, n_columns = 0;
    static const char *endpoints[MAX_ENDPOINTS];
    int n_endpoints = 0;
    static char *endpoint_texts[MAX_ENDPOINTS];
    int n_endpoint_texts = 0;
    char *response_format = NULL;
    float seconds;
    long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:n:o:qvh", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': p.llama.model_path = optarg; break;
        case OPT_MMPROJ: p.llama.mmproj_path = optarg; break;
        case OPT_CTX: bad = parse_long("--ctx", optarg, 0, 1 << 22, &v); p.llama.n_ctx_per_seq = (int)v; break;
        case OPT_PARALLEL: bad = parse_long("--parallel", optarg, 1, 255, &v); p.llama.n_parallel = (int)v; break;
        case OPT_THREADS: bad = parse_long("--threads", optarg, 0, 1024, &v); p.llama.n_threads = (int)v; break;
        case OPT_CPU_POLL: bad = parse_long("--cpu-poll", optarg, 0, 100, &v); p.llama.cpu_poll = (int)v; break;
        case OPT_GPUS: bad = parse_gpus(optarg, gpus, &p.n_gpus); p.gpus = gpus; break;
        case OPT_GPU_LAYERS: bad = parse_long("--gpu-layers", optarg, -1, 100000, &v); p.llama.n_gpu_layers = (int)v; break;
        case 'p': p.prompt = optarg; break;
        case OPT_SYSTEM: p.system_prompt = optarg; break;
        case 'n': bad = parse_long("--max-tokens", optarg, 1, 1 << 20, &v); p.sampling.max_tokens = (int)v; break;
        case OPT_TEMPERATURE: bad = parse_float("--temperature", optarg, 0, 100, &p.sampling.temperature); break;
        case OPT_TOP_P: bad = parse_float("--top-p", optarg, 0, 1, &p.sampling.top_p); break;
        case OPT_TOP_K: bad = parse_long("--top-k", optarg, 0, 1 << 20, &v); p.sampling.top_k = (int)v; break;
        case OPT_MIN_P: bad = parse_float("--min-p", optarg, 0, 1, &p.sampling.min_p); break;
        case OPT_REPEAT_PENALTY: bad = parse_float("--repeat-penalty", optarg, 0.01, 100, &p.sampling.repeat_penalty); break;
        case OPT_STOP:
            if (n_stop == 16) {
                fprintf(stderr, "sluice: at most 16 --stop strings\n");
                return EXIT_USAGE;
            }
            stops[n_stop++] = optarg;
            break;
        case OPT_SEED: bad = parse_long("--seed", optarg, 0, LONG_MAX, &v); p.sampling.seed = (uint64_t)v; break;
        case OPT_MAX_EDGE: bad = parse_long("--max-image-edge", optarg, 0, 1 << 16, &v); p.image.max_edge = (int)v; break;
        case OPT_MAX_PIXELS: bad = parse_long("--max-image-pixels", optarg, 1, LONG_MAX, &v); p.image.max_input_pixels = (uint64_t)v; break;
        case OPT_BACKGROUND: bad = parse_rgb("--background", optarg, p.image.background); break;
        case OPT_DECODE_WORKERS: bad = parse_long("--decode-workers", optarg, 1, 256, &v); p.decode_workers = (int)v; break;
        case OPT_REPLICAS: bad = parse_long("--replicas", optarg, 1, 64, &v); p.replicas = (int)v; replicas_given = true; break;
        case OPT_ORDERED: p.ordered = true; break;
        case OPT_MEMORY_BUDGET: bad = parse_size("--memory-budget", optarg, &p.memory_budget); break;
        case OPT_MAX_FAILED: bad = parse_fraction("--max-failed", optarg, &p.max_failed); break;
        case OPT_METRICS_ADDR:
            p.metrics_addr = strcmp(optarg, "off") == 0 ? NULL : optarg;
            p.metrics_optional = false;
            break;
        case 'o': p.output_dir = optarg; break;
        case OPT_FORMAT: p.output_format = optarg; break;
        case OPT_OVERWRITE: p.overwrite = true; break;
        case OPT_SHOW: bad = parse_long("--show", optarg, 0, LONG_MAX, &pr.show); break;
        case 'q': pr.quiet = 1; break;
        case OPT_PROGRESS_EVERY: {
            float every;
            bad = parse_float("--progress-every", optarg, 0.05, 86400, &every);
            pr.line_every = every;
            break;
        }
        case OPT_INPUT_FORMAT: p.input_format = optarg; break;
        case OPT_INCLUDE: case OPT_EXCLUDE: {
            bool inc = c == OPT_INCLUDE;
            int *n = inc ? &n_include : &n_exclude;
            if (*n == 64) {
                fprintf(stderr, "sluice: at most 64 --%s globs\n", inc ? "include" : "exclude");
                return EXIT_USAGE;
            }
            (inc ? includes : excludes)[(*n)++] = optarg;
            break;
        }
        case OPT_IMAGE_COLUMN: p.image_column = optarg; break;
        case OPT_PROMPT_COLUMN: p.prompt_column = optarg; break;
        case OPT_ALLOW_FILE_URLS: p.allow_file_urls = true; break;
        case OPT_MAX_DOWNLOAD: bad = parse_size("--max-download-bytes", optarg, &p.max_download_bytes); break;
        case OPT_DOWNLOAD_TIMEOUT:
            bad = parse_float("--download-timeout", optarg, 0.001, 86400, &seconds);
            p.download_timeout_s = seconds;
            break;
        case OPT_DOWNLOAD_RETRIES: bad = parse_long("--download-retries", optarg, 0, 100, &v); p.download_retries = (int)v; break;
        case OPT_COLUMNS:
            for (char *save = NULL, *tok = strtok_r(optarg, ",", &save); tok;
                 tok = strtok_r(NULL, ",", &save)) {
                if (n_columns == 256) {
                    fprintf(stderr, "sluice: --columns takes at most 256 names\n");
                    return EXIT_USAGE;
                }
                columns[n_columns++] = tok;
            }
            if (!n_columns)
                return usage_error("--columns needs at least one column name", NULL);
            break;
        case OPT_IMAGE_BYTES: p.include_image_bytes = true; break;
        case OPT_INPUT_SHARD: bad = parse_input_shard(optarg, &p.input_shard_index, &p.input_shard_count); break;
        case OPT_INPUT_SHARD_SIZE: bad = parse_long("--input-shard-size", optarg, 1, 1L << 30, &v); p.input_shard_size = (unsigned)v; break;
        case OPT_SHARD_ROWS: bad = parse_long("--shard-rows", optarg, 1, LONG_MAX, &p.shard_rows); break;
        case OPT_LIMIT: bad = parse_long("--limit", optarg, 1, LONG_MAX, &p.limit); break;
        case OPT_SAMPLE:
            bad = parse_fraction("--sample", optarg, &p.sample);
            if (!bad && p.sample == 0.0) { /* an empty sample is a mistake, not a job */
                fprintf(stderr, "sluice: --sample expects a fraction above 0 (0.01 or 1%%), got '%s'\n", optarg);
                bad = -1;
            }
            break;
        case 'v': verbose = 1; break;
        case OPT_ENGINE: p.engine = optarg; break;
        case OPT_ENDPOINT:
            if (n_endpoints == MAX_ENDPOINTS) {
                fprintf(stderr, "sluice: at most %d endpoints\n", MAX_ENDPOINTS);
                bad = 1;
                break;
            }
            endpoints[n_endpoints++] = optarg;
            break;
        case OPT_ENDPOINTS_FILE:
            bad = read_endpoints(optarg, endpoints, &n_endpoints, endpoint_texts, &n_endpoint_texts);
            break;
        case OPT_SERVED_MODEL: p.openai.served_model = optarg; break;
        case OPT_API_KEY_ENV: p.openai.api_key_env = optarg; break;
        case OPT_MAX_IN_FLIGHT: bad = parse_long("--max-in-flight", optarg, 1, 4096, &v); p.openai.max_in_flight = (int)v; break;
        case OPT_ADAPTIVE: p.openai.adaptive = true; break;
        case OPT_ADAPTIVE_MAX:
            bad = parse_long("--adaptive-max", optarg, 1, 100000, &v);
            p.openai.adaptive_max_in_flight = (int)v;
            adaptive_max_given = true;
            break;
        case OPT_ENDPOINT_FAILURES:
            bad = parse_long("--endpoint-failures", optarg, 1, 1000000, &v);
            p.openai.endpoint_failures = (int)v;
            break;
        case OPT_REQUEST_TIMEOUT:
            bad = parse_float("--request-timeout", optarg, 0.01, 86400, &seconds);
            p.openai.request_timeout_s = seconds;
            break;
        case OPT_MAX_ATTEMPTS: bad = parse_long("--max-attempts", optarg, 1, 1000, &v); p.openai.max_attempts = (int)v; break;
        case OPT_COOLDOWN:
            bad = parse_float("--endpoint-cooldown", optarg, 0, 86400, &seconds);
            p.openai.cooldown_s = seconds;
            break;
        case OPT_GIVE_UP:
            bad = parse_float("--give-up-after", optarg, 0, 864000, &seconds);
            p.openai.all_down_s = seconds;
            break;
        case OPT_JPEG_EDGE: bad = parse_long("--jpeg-edge", optarg, 0, 1 << 16, &v); p.jpeg_edge = (int)v; break;
        case OPT_JPEG_QUALITY: bad = parse_long("--jpeg-quality", optarg, 1, 100, &v); p.jpeg_quality = (int)v; break;
        case OPT_RESPONSE_FORMAT:
            free(response_format);
            bad = !(response_format = read_text_file("--response-format", optarg));
            p.openai.response_format = response_format;
            break;
        case OPT_STREAM: p.openai.stream = true; break;
        case OPT_SEND_ORIGINAL: p.send_original = true; break;
        case 'h': print_usage(stdout); return 0;
        default: fprintf(stderr, "Run 'sluice caption --help' for the options.\n"); return EXIT_USAGE;
        }
        if (bad) {
            free_all(endpoint_texts, n_endpoint_texts);
            free(response_format);
            return EXIT_USAGE;
        }
    }
    if (adaptive_max_given && p.openai.adaptive_max_in_flight < p.openai.max_in_flight) {
        fprintf(stderr, "sluice: --adaptive-max %d is below --max-in-flight %d, where the adaptive "
                        "limit starts; raise it or lower --max-in-flight\n",
                p.openai.adaptive_max_in_flight, p.openai.max_in_flight);
        free_all(endpoint_texts, n_endpoint_texts);
        free(response_format);
        return EXIT_USAGE;
    }
    p.openai.endpoints = endpoints;
    p.openai.n_endpoints = n_endpoints;
    if (p.n_gpus > 0 && !replicas_given)
        p.replicas = p.n_gpus;
    p.include = includes;
    p.n_include = n_include;
    p.exclude = excludes;
    p.n_exclude = n_exclude;
    if (n_columns) {
        p.columns = columns;
        p.n_columns = n_columns;
    }
    int rc = caption_with(&p, &pr, verbose, argc, argv, stops, n_stop);
    free_all(endpoint_texts, n_endpoint_texts);
    free(response_format);
    return rc;
}

static int caption_with(sl_caption_params *pp, printer *prp, int verbose, int argc, char **argv,
                        const char **stops, int n_stop)
{
    sl_caption_params p = *pp;
    printer pr = *prp;
    if (optind >= argc)
        return usage_error("caption needs an input: a folder, manifest, tar shards or Parquet files",
                           NULL);
    p.input_dir = argv[optind];
    p.inputs = (const char *const *)(argv + optind);
    p.n_inputs = argc - optind;
    p.stop = stops;
    p.n_stop = n_stop;
    if (!p.output_dir)
        return usage_error("caption needs an output folder: -o DIR", NULL);
    bool openai = p.engine && strcmp(p.engine, "openai") == 0;
    if (openai && p.openai.n_endpoints == 0)
        return usage_error("--engine openai needs a server: --endpoint URL or --endpoints-file F",
                           NULL);
    if (!openai && !p.llama.model_path)
        return usage_error("caption needs a model: --model PATH.gguf or hf://ORG/REPO", NULL);

    sl_log_set_level(pr.quiet ? SL_LOG_ERROR : verbose ? SL_LOG_DEBUG : SL_LOG_WARN);
    static sl_hub_files model_files, projector_files;
    int hub_exit = fetch_from_hub(&p.llama.model_path, &p.llama.mmproj_path, &model_files,
                                  &projector_files, pr.quiet);
    if (hub_exit)
        return hub_exit;
    if (!openai && !p.llama.mmproj_path)
        return usage_error("caption needs a vision projector: --mmproj PATH.gguf", NULL);
    p.on_row = printer_row;
    p.on_row_user = &pr;
    p.on_metrics_port = printer_metrics_port;
    p.on_progress = printer_progress;
    p.progress_ms = pr.tty ? 1000 : (int)(pr.line_every * 1000 < 1000 ? pr.line_every * 1000 : 1000);
    p.stop_requests = &stop_requests;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    sl_caption_summary sum;
    printer_init(&pr);
    sl_status st = sl_caption_run(&p, &sum);
    printer_finish(&pr);
    switch (st) {
    case SL_OK:
        break;
    case SL_ERR_INVALID_ARG: case SL_ERR_NOT_FOUND: case SL_ERR_EXISTS: case SL_ERR_MODEL:
        fprintf(stderr, "sluice: %s\n", sl_last_error());
        return EXIT_USAGE;
    case SL_ERR_STOPPED: case SL_ERR_TOO_MANY_FAILED: case SL_ERR_STAGE:
        /* The run ended early; what finished is committed. */
        fprintf(stderr, "sluice: %s\nsluice: %ld rows written (%ld failed) to %s\n"
                        "sluice: run the same command again to go on from there\n",
                sl_last_error(), sum.rows, sum.rows_failed,
                sum.output_file[0] ? sum.output_file : "(nothing committed)");
        return st == SL_ERR_STOPPED ? EXIT_STOPPED : EXIT_RUN;
    default:
        fprintf(stderr, "sluice: %s\n", sl_last_error());
        return EXIT_RUN;
    }
    if (sum.rows == 0 && sum.resumed) {
        if (!pr.quiet)
            printf("all inputs were already done: %s holds their %ld rows from an earlier run "
                   "(%ld skipped now); nothing new written\n", p.output_dir,
                   sum.rows_done_before, sum.rows_skipped);
        return 0;
    }
    if (!pr.quiet) {
        double rate = sum.seconds > 0 ? sum.rows / sum.seconds : 0;
        double tps = sum.seconds > 0 ? sum.generated_tokens / sum.seconds : 0;
        if (sum.rows_ok > pr.shown)
            printf("... and %ld more captions\n", sum.rows_ok - pr.shown);
        if (sum.rows_skipped)
            printf("\nresumed: %ld inputs skipped, done by an earlier run", sum.rows_skipped);
        printf("\n%ld images: %ld captioned, %ld failed in %.2f s (%.2f images/s, %.1f tokens/s; "
               "model '%s' loaded in %.2f s)\n"
               "busy: decode %.2f s, engine %.2f s, write %.2f s; peak memory in flight %.1f MB "
               "of %.0f MB\noutput: %s%s\nreport: %s/report.html\n",
               sum.rows, sum.rows_ok, sum.rows_failed, sum.seconds, rate, tps, sum.model_name,
               sum.load_seconds, sum.decode_busy_s, sum.engine_busy_s, sum.write_busy_s,
               sum.peak_bytes_in_flight / 1e6, sum.memory_budget / 1e6, sum.output_file,
               sum.shards > 1 ? " (the last of the shards)" : "", p.output_dir);
    }
    return sum.rows_failed ? EXIT_ROWS_FAILED : 0;
}

int main(int argc, char **argv)
{
    report_crashes();
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        print_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("sluice %s\n", SL_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "caption") == 0)
        return cmd_caption(argc - 1, argv + 1);
    fprintf(stderr, "sluice: unknown command '%s'; the command is 'caption'.\n"
                    "Run 'sluice --help' for usage.\n", argv[1]);
    return EXIT_USAGE;
}
