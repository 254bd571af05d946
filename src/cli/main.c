/* cli/main.c — the sluice command: `caption` (flags), `batch` (an OpenAI
 * batch file: caption's flags, input format openai-batch), `run` (a job file,
 * flags over it) and `config print|check|keys`; calls libsluice's public
 * API, prints progress and a summary. Nothing here but the CLI. The flags
 * are made from the library's settings table (sluice/config.h), so each has
 * a job-file key; a new flag is a row there, not a case here.
 *
 * Exit status: 0 every row succeeded; 3 the run finished but the output
 * holds failed rows (with their error; earlier runs' too); 2 a wrong command
 * line or configuration; 75 the output is in use by another run; 1 the run
 * could not finish; 130 stopped by a signal
 * (SIGINT, SIGTERM, SIGHUP; the rows finished before it are in the
 * output). SIGPIPE is ignored: a closed console does not end a run. */
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/printer.h"
#include "sluice/sluice.h"

/* EXIT_BUSY is sysexits.h's EX_TEMPFAIL: the output is another run's for now,
 * so a scheduler may retry where it must not after EXIT_USAGE. */
enum { EXIT_ROWS_FAILED = 3, EXIT_USAGE = 2, EXIT_RUN = 1, EXIT_BUSY = 75, EXIT_STOPPED = 130 };
/* Internal: --help was printed, exit 0. */
enum { EXIT_HELP = -1 };

/* SIGINT/SIGTERM/SIGHUP: the first stops reading and finishes the rows in
 * flight, the second stops at once. The executor polls this counter. A
 * hangup (the terminal or ssh session of a long run closed) is a stop like
 * the others, not a death that loses the rows in flight. Stopping at once
 * still waits for each worker to return, and one stuck in a call that
 * never does (a read from a hung network mount) would hold the run
 * forever; the library cannot leave a thread behind and free what it uses,
 * so the process does: the second signal arms a timer, and the run not
 * ended STUCK_EXIT_S later (or a third signal) exits without it. Committed
 * parts and the ledger are safe at any instant (a kill -9 is too). */
enum { STUCK_EXIT_S = 10 };
static atomic_int stop_requests;

static void exit_stuck(int sig)
{
    static const char msg[] =
        "sluice: the run did not end after the stop request (a worker is stuck, e.g. in a read "
        "from a hung mount); exiting without it: rows in flight are lost, committed parts are "
        "kept\n";
    (void)sig;
    (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
    _exit(EXIT_STOPPED);
}

static void on_signal(int sig)
{
    int n = atomic_fetch_add(&stop_requests, 1) + 1;
    if (n == 2)
        alarm(STUCK_EXIT_S);
    else if (n > 2)
        exit_stuck(sig);
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
    "       sluice batch REQUESTS.jsonl -o OUTPUT_DIR [options]  (OpenAI batch file)\n"
    "       sluice run JOB.yaml [INPUT...] [options]     (a job file: docs/jobs.md)\n"
    "       sluice config print|check JOB.yaml [options]; sluice config keys\n"
    "\n"
    "Caption every image of the inputs with a vision-language model and write one\n"
    "row per image to OUTPUT_DIR/part-NNNNN.jsonl (or .parquet, .tar). An INPUT is\n"
    "a folder (searched recursively), image or video files, a manifest (.jsonl or\n"
    ".csv naming files or URLs), WebDataset tar shards (.tar), Parquet files\n"
    "(.parquet) or Arrow files (.arrow: a Hugging Face dataset saved to disk); braces\n"
    "and globs expand: 'shards/data-{000..127}.tar', 'hf/*.parquet',\n"
    "'clips/*.mp4'. A dataset on the Hugging Face hub is read in place:\n"
    "hf://datasets/ORG/NAME[@REVISION][/PATTERN] (its .parquet files, else its .tar\n"
    "shards; $HF_ENDPOINT, $HF_TOKEN) (docs/inputs.md).\n"
    "Interrupted (crash, kill, Ctrl-C)? Run the same command again: it goes on where\n"
    "it stopped, every input in exactly one row (a ledger in OUTPUT_DIR keeps track).\n"
    "Every option has a key in a job file ('sluice config keys'); a switch takes\n"
    "=false (--ordered=false) to turn off what a job file turned on. Options are\n"
    "taken by their whole name only: a shortened one is refused, not guessed.\n"
    "\n";

static const char usage_input[] =
    "Input:\n"
    "      --input-format F      folder, file, jsonl, json (one array), csv, webdataset, arrow,\n"
    "                            parquet (default, or auto: by name) or openai-batch (what\n"
    "                            sluice batch reads); a folder under a kind (or named\n"
    "                            for one: Spark's out.parquet) is that kind's files under it\n"
    "      --include GLOB        folders (images, or a dataset's files): only relative paths\n"
    "                            matching GLOB (repeatable)\n"
    "      --exclude GLOB        folders: skip relative paths matching GLOB (repeatable)\n"
    "      --image-column NAME   manifest/Parquet column with the image path, URL or\n"
    "                            struct (default: image, path, url, images, file_name,\n"
    "                            URL or image_url), or a\n"
    "                            WebDataset member's extension (png); A,B: several, a row's\n"
    "                            images in that order\n"
    "      --id-column NAME      the column whose value (a string or an integer) is a row's id:\n"
    "                            manifests (default: id) and Parquet/Arrow (default: none,\n"
    "                            FILE:ROW); none: FILE:LINE even beside an id column\n"
    "      --prompt-column NAME  a row's value in this column replaces --prompt (default: prompt):\n"
    "                            a string, or a conversation's first human/user turn (LLaVA's\n"
    "                            conversations, chat messages); a row without it takes\n"
    "                            --prompt (how many did is said at the end)\n"
    "      --turns WHICH         a conversation there: first (its first human turn is the\n"
    "                            prompt, default), last (the turns up to its last human one\n"
    "                            are sent, and the model answers that one) or all (each human\n"
    "                            turn answered in order, the model's answers written into\n"
    "                            the conversation)\n"
    "      --image-root DIR      relative image paths in manifests and Parquet are under DIR\n"
    "                            (default: the manifest's folder), e.g. LLaVA's image tree\n"
    "      --allow-file-urls     read file:// URLs found in data (refused by default)\n"
    "      --max-download-bytes SIZE  largest http(s)/S3 image fetched; bytes read of a\n"
    "                            remote video (default: 64M)\n"
    "      --max-line-bytes SIZE  a manifest line or CSV record at most; longer: a failed\n"
    "                            row (default: 1M; a batch file's: 64M); raised later,\n"
    "                            caption's --retry-failed reads such lines again\n"
    "      --max-item-bytes SIZE  an image held in the data (tar member, Parquet cell,\n"
    "                            data: URL) or a local image file (default: 256M)\n"
    "      --download-timeout S  seconds per http(s) image try, whole transfer (default: 30)\n"
    "      --download-retries N  tries after the first on a network error, 5xx or 429 (default: 2)\n"
    "      --input-shard I/N     read only input shards I, I+N, I+2N, ... so that N runs\n"
    "                            (0/N .. N-1/N, e.g. a Slurm array) split the work exactly;\n"
    "                            a shard is one input file, or --input-shard-size items\n"
    "      --input-shard-size N  items per shard of an input not split by files (default: 1000)\n"
    "\n";

static const char usage_text[] =
    "Model:\n"
    "  -m, --model PATH          language model GGUF, or hf://ORG/REPO[/FILE.gguf] to fetch\n"
    "                            it (and its mmproj) from the Hugging Face hub into the\n"
    "                            cache ($HF_HOME; $HF_ENDPOINT, $HF_TOKEN, $HF_HUB_OFFLINE)\n"
    "      --mmproj PATH         vision projector GGUF (mmproj), or hf://ORG/REPO/FILE.gguf\n"
    "      --lora FILE[:SCALE]   a LoRA adapter GGUF made for the model, applied at SCALE\n"
    "                            (default 1; repeatable, up to 8; llama engine only)\n"
    "      --chat-template NAME|FILE  render prompts with this chat template instead of the\n"
    "                            model's: plain (User:/Assistant:), a name llama.cpp knows\n"
    "                            (chatml, llama3, gemma, smolvlm, ...) or a template file\n"
    "      --parallel N          sequences decoded together per replica (default: 4 on a\n"
    "                            CPU; on a GPU what its free memory holds, at most 128)\n"
    "      --ctx N               context positions per sequence (default: sized for the\n"
    "                            prompt, the image and --max-tokens, grown for a request\n"
    "                            that needs more; given: fixed)\n"
    "      --cache-type-k T      KV cache type of K: f16 (default), f32, bf16, q8_0, q4_0,\n"
    "                            q4_1, q5_0, q5_1, iq4_nl (q8_0: ~1.9x the positions of f16\n"
    "                            in the same memory, so more sequences on a GPU)\n"
    "      --cache-type-v T      KV cache type of V, the same types (quantized: flash\n"
    "                            attention on)\n"
    "      --threads N           CPU threads of each replica (default: the cores divided\n"
    "                            between --replicas)\n"
    "      --gpu-layers N        layers offloaded to a GPU build (default: all)\n"
    "      --gpus LIST           one replica per GPU, e.g. 0,1,2,3: each loads the model\n"
    "                            and vision encoder on its own device (CUDA builds)\n"
    "      --cpu-poll N          0..100: how hard ggml's own thread pool spins between ops\n"
    "                            (default 50); llama.cpp built with OpenMP, as here, spins\n"
    "                            in libgomp whatever it says: with the cores shared by other\n"
    "                            jobs give each fewer --threads (or OMP_WAIT_POLICY=passive)\n"
    "      --sampler WHERE       where next tokens are chosen: auto (default: device on a\n"
    "                            GPU, else host), host, device, reference (llama.cpp's\n"
    "                            sampler chain, one sequence at a time: the slow baseline)\n"
    "      --encode-ahead N      requests tokenized and encoded by a second thread while\n"
    "                            the engine decodes (default: on a GPU min(parallel, 32),\n"
    "                            on a CPU 0: its cores are decoding)\n"
    "      --encoders N          encoder threads, each with its own copy of the vision\n"
    "                            projector, encoding images side by side (default 1;\n"
    "                            more encode ahead, on a CPU too)\n"
    "      --image-cache SIZE    the vision encoder's outputs kept for images seen again,\n"
    "                            by their pixels (several rows or questions of one image):\n"
    "                            not encoded twice (default: 256M; 0: off)\n"
    "      --image-min-tokens N, --image-max-tokens N\n"
    "                            tokens an image gives at least and at most, for projectors\n"
    "                            that resize images to any size (Qwen2-VL, Qwen2.5-VL): the\n"
    "                            image is scaled to fit (default: the model's; Qwen2.5-VL's\n"
    "                            8..4096, i.e. up to 1792x1792 px, or 256 for 448x448)\n"
    "      --prefix-cache on|off a free sequence keeps its KV: the next request that begins\n"
    "                            alike (a conversation's next turn, another question about\n"
    "                            one picture) goes on from where they part (default: on)\n";

static const char usage_batch_text[] =
    "OpenAI batch files (sluice batch; docs/batch.md): each line {custom_id, method,\n"
    "url: /v1/chat/completions, body}; answers in OpenAI's batch output format,\n"
    "OUTPUT_DIR/part-NNNNN.jsonl ({id, custom_id, response: {status_code, request_id,\n"
    "body}, error}); --format parquet flattens it. A request's body sets its own\n"
    "max_tokens, temperature, top_p, seed, stop, logprobs, top_logprobs and\n"
    "response_format, presence_penalty, frequency_penalty and vLLM's top_k, min_p and\n"
    "repetition_penalty; the flags above are the defaults. --mmproj is needed only\n"
    "for requests with images.\n"
    "      --allow-local-images  image_url parts may name local files (default: refused)\n"
    "      --ignore-model        run requests whose body names another model (default: fail)\n"
    "      --errors-file FILE    failed requests go to FILE, not the output parts\n";

static const char usage_rest_text[] =
    "Prompt and generation:\n"
    "  -p, --prompt TEXT         user prompt (default: \"Describe this image in one sentence.\";\n"
    "                            not with --task/--tasks: each task brings its own)\n"
    "      --system TEXT         system prompt (default: the one the model's chat template\n"
    "                            writes where none is given, as Qwen2.5-VL's does; else\n"
    "                            none)\n"
    "  -n, --max-tokens N        tokens to generate at most (default: 64)\n"
    "      --temperature F       0 is greedy (default: 0)\n"
    "      --top-p F  --top-k N  --min-p F  --repeat-penalty F\n"
    "                            (off: 1, 0, 0, 1; --top-p 0: the most likely token\n"
    "                            alone, greedy)\n"
    "      --presence-penalty F  --frequency-penalty F\n"
    "                            -2..2 (off: 0): a token's logit lowered by F once it is\n"
    "                            in the answer, or F times its count there (OpenAI's)\n"
    "      --seed N              job seed; each row's seed mixes it with the row id (default: 0)\n"
    "      --stop TEXT           end generation at TEXT (not written); repeatable, up to 16\n"
    "      --json-schema F       answers are JSON matching this JSON schema (llama: sampled\n"
    "                            under a grammar made from it; openai: response_format); an\n"
    "                            answer that does not parse or match fails (invalid_output)\n"
    "      --grammar F           llama engine: sample under this GBNF grammar (rule root)\n"
    "      --choices A,B,...     the answer is one of these (classify, filter, rate),\n"
    "                            each scored by the model's probability, column scores:\n"
    "                            {\"yes\":0.93,\"no\":0.07}; no tokens generated (docs/output.md)\n"
    "      --samples N           N answers per image (up to 16), each with its own seed: a\n"
    "                            row per answer, column sample (with tasks: each task's)\n"
    "      --logprobs N          write each answer's tokens with their log-probabilities and\n"
    "                            the N (1-20) most likely at each place (column logprobs)\n"
    "      Prompts may name the row's columns: {label}, {meta.author}; {{ is a brace.\n"
    "Several tasks per image (the image encoded once; docs/output.md):\n"
    "      --task NAME=PROMPT    ask every image this too (NAME=@FILE reads the prompt);\n"
    "                            repeatable, each answer in columns NAME, NAME_finish_reason, ...\n"
    "      --tasks FILE          tasks from a JSON file: prompt, system, sampling per task\n"
    "      --task-max-tokens NAME=N  --task-temperature NAME=F   a task's own settings\n"
    "      --rows-per-task       one row per image and task (column task)\n"
    "Pipeline:\n"
    "      --decode-workers N    image decode threads (default: 2)\n"
    "      --replicas N          engine instances, each with its own model (default: 1)\n"
    "      --ordered             write rows in input order (default: as they finish)\n"
    "      --memory-budget SIZE  bytes in flight at most, e.g. 512M, 4G (default: 1/4 of RAM)\n"
    "      --max-failed F        stop when more than this fraction (0.1 or 10%) of rows fail\n"
    "                            (judged once 20 rows are done)\n"
    "      --limit N             try the job on a slice: at most N rows (not done before), then\n"
    "                            stop; the same command without it goes on from there\n"
    "      --sample F            only the rows whose id hashes below F (0.01 or 1%): the same\n"
    "                            rows every time; without it, a rerun does the others\n"
    "      --dry-run             no model: read and decode every input, a row each with its\n"
    "                            format, size or error (no answer); counts, failures and\n"
    "                            read/decode speed at the end (docs/inputs.md)\n"
    "      --stage STAGE         a stage of yours (docs/stages.md): FILE.lua or FILE.so, after\n"
    "                            decode, or FILE@read, FILE@engine; or a JSON object {\"lua\":\n"
    "                            FILE, \"after\": ..., \"workers\": N, \"config\": {...}, ...};\n"
    "                            repeatable, in order\n"
    ;

static const char usage_tail[] =
    "Images:\n"
    "      --max-image-edge N    shrink so the longer edge is at most N px (default: 512; 0 keeps)\n"
    "      --max-image-pixels N  refuse images larger than N pixels, read from the header\n"
    "                            before decoding (default: 100000000)\n"
    "      --max-aspect-ratio N  refuse images whose longer side is over N times the shorter,\n"
    "                            read from the header (default: 200, Qwen2-VL's limit; 0: no\n"
    "                            limit; not in resume's fingerprint)\n"
    "      --background RRGGBB   colour transparent pixels are flattened onto (default: ffffff)\n"
    "      --image-text TEXT     a row with a list of images: text before each, {index} its\n"
    "                            number (default: none; e.g. 'Image {index}:')\n"
    "      --image-placeholder MARK  the row's images go where its prompt holds MARK\n"
    "                            (e.g. '<image>'): a list's image k at the k-th (default:\n"
    "                            before the prompt; not with --task)\n"
    "Videos (.mp4 .webm .mkv .mov .avi .ts: a row each, frames as images; docs/inputs.md):\n"
    "      --video-frames N      frames taken from each video, at most (1-16, default: 8)\n"
    "      --video-fps F         frames per second of video, at most (default: 1; 0: always N)\n"
    "      --frame-text TEXT     text before each frame; {time} its second, {index} its\n"
    "                            number (default: 'Frame at {time} s:'; '' for none)\n"
    "Monitoring:\n"
    "      --metrics-addr H:P    serve Prometheus /metrics there (default: 127.0.0.1:9797;\n"
    "                            port 0 picks a free one; 'off' disables). The final values\n"
    "                            are written to OUTPUT_DIR/_metrics.prom either way. The\n"
    "                            same address serves a live page at / (progress, engine\n"
    "                            figures, the latest images with their captions).\n"
    "      --metrics-token-file FILE  answer only requests that bring the token in FILE\n"
    "                            (its first line; mode 600): 'Authorization: Bearer TOKEN'\n"
    "                            or /?token=TOKEN. For a node other users share.\n";

static const char usage_output_text[] =
    "Output:\n"
    "  -o, --output DIR          output folder (created if missing); beside the rows go\n"
    "                            _summary.json (counts, time per stage,\n"
    "                            tokens, failures by class) and _report.html (a sample of\n"
    "                            the images with their captions, self-contained). Or\n"
    "                            s3://bucket/prefix (AWS_* environment: docs/output.md)\n"
    "      --state-dir DIR       s3:// output: the local folder of its resume ledger and of\n"
    "                            parts being written (default: ~/.local/state/sluice/s3/...)\n"
    "      --format F            jsonl (default), parquet (zstd; pyarrow, DuckDB, HF datasets)\n"
    "                            or webdataset (tar shards: KEY.json, the row, KEY.txt,\n"
    "                            the caption, beside KEY.jpg/.png/..., the image with\n"
    "                            --include-image-bytes);\n"
    "                            openai-batch: a batch file's answers as JSONL (docs/batch.md)\n"
    "      --compression C       Parquet: zstd (default), snappy (Spark's), gzip or none\n"
    "      --errors-file FILE    failed rows go to FILE (JSONL), not the output parts\n"
    "      --overwrite           start over: remove OUTPUT_DIR's part files and resume\n"
    "                            ledger (default: the same command resumes; other\n"
    "                            settings in a used folder are refused)\n"
    "      --retry-failed        take the failed rows out of OUTPUT_DIR's parts (each part\n"
    "                            rewritten without them) and caption those inputs again;\n"
    "                            with a new --max-tokens, under it (the output goes on\n"
    "                            with it)\n"
    "      --columns A,B,...     pass only these input columns through (default: all;\n"
    "                            Parquet types come from the first 100 rows; NAME:TYPE\n"
    "                            declares one: string, int64, double, bool, decimal(P,S)\n"
    "                            or a shape such as tags:{\"list\":\"string\"})\n"
    "      --answer-columns      each property of a --json-schema answer in a column of its\n"
    "                            own, typed from the schema (with tasks: NAME_PROPERTY)\n"
    "      --include-image-bytes the original image bytes: Parquet's column image_bytes,\n"
    "                            a WebDataset sample's image member\n"
    "      --shard-rows N        start a new part-NNNNN file every N rows (default: 10000);\n"
    "                            each part is a resume point: a crash loses at most N rows\n"
    "      --shard-bytes SIZE    also start a new part once one holds SIZE bytes (e.g. 500M;\n"
    "                            with image bytes kept, parts the size datasets like)\n"
    "      --show N              print the first N captions (default: 5)\n"
    "  -q, --quiet               print only errors (failed rows' lines among them)\n"
    "      --progress-every S    seconds between progress lines when stderr is not a\n"
    "                            terminal (default: 10; a terminal redraws every second)\n"
    "  -v, --verbose             print llama.cpp's messages too\n"
    "  -h, --help                this text\n"
    "      --version             print the version, and the llama.cpp it runs\n"
    "\n"
    "Exit status: 0 all rows ok, 3 the output holds failed rows (see their \"error\"\n"
    "field; a rerun exits 3 until --retry-failed captions them well), 2 wrong command\n"
    "line or configuration, 75 the output is in use by another sluice run, 1 the run\n"
    "could not finish, 130 stopped by SIGINT/SIGTERM/SIGHUP (a first signal finishes\n"
    "the rows in flight, a second stops at once; a third, or 10 s after the second with\n"
    "a worker stuck, exits without waiting). A closed stdout or stderr (a pipe whose\n"
    "reader ended) does not stop a run.\n";

static const char usage_openai_text[] =
    "OpenAI-compatible servers (vLLM, SGLang, llama-server; see docs/openai.md):\n"
    "      --engine E            llama (default: in-process) or openai (HTTP servers)\n"
    "      --endpoint URL        a server, e.g. http://10.0.0.7:8000; repeatable\n"
    "      --endpoints-file F    more servers, one URL a line (# comments)\n"
    "      --served-model NAME   the request's model (default: the first of GET /v1/models)\n"
    "      --api-key-env VAR     send the key held in environment variable VAR\n"
    "      --api-key-header NAME the header carrying it bare (default: Authorization:\n"
    "                            Bearer KEY; Azure OpenAI: api-key)\n"
    "      --header 'NAME: VALUE'  another header for every request (repeatable)\n"
    "      --max-in-flight N     requests outstanding per endpoint (default: 8)\n"
    "      --adaptive            raise or lower that limit with measured throughput\n"
    "      --adaptive-max N      the most it may raise it to (default: 64)\n"
    "      --request-timeout S   seconds per attempt (default: 600)\n"
    "      --max-attempts N      tries per row on errors worth retrying, 429s not counted\n"
    "                            (default: 8)\n"
    "      --endpoint-failures N failures in a row that take an endpoint out (default: 3)\n"
    "      --endpoint-cooldown S seconds out of rotation after them (default: 15)\n"
    "      --give-up-after S     stop the job once every endpoint has failed this long,\n"
    "                            or no request got an answer this long (endless 429s)\n"
    "                            (default: 120); the rows finished are kept\n"
    "      --jpeg-edge PX        longer edge of the JPEG sent (default: as decoded)\n"
    "      --jpeg-quality Q      its quality, 1..100 (default: 90)\n"
    "      --send-original       send JPEG and PNG inputs as they are, not re-encoded (the\n"
    "                            server sees the original file; other formats: the JPEG)\n"
    "      --video-part PART     a video's frames as image_url parts, each after its\n"
    "                            --frame-text (default; every server), or video_url: one\n"
    "                            part of them all that vLLM gives the model as a video\n"
    "      --response-format F   a JSON file sent as response_format (e.g. a JSON schema)\n"
    "      --stream              stream answers (server-sent events): TTFT and inter-token\n"
    "                            latency per endpoint in the vllm:* metrics\n"
    "      --split-samples       send --samples N as N requests, each with its answer's seed\n"
    "                            (default: one request with \"n\": N; for servers without n)\n"
    "      --max-tokens-field F  the field that carries --max-tokens: max_tokens (default),\n"
    "                            max_completion_tokens (OpenAI's reasoning models refuse\n"
    "                            max_tokens) or both (a fleet of old and new servers)\n";

static void print_usage(FILE *fp)
{
    fputs(usage_head, fp);
    fputs(usage_input, fp);
    fputs(usage_text, fp);
    fputs(usage_openai_text, fp);
    fputs(usage_batch_text, fp);
    fputs(usage_rest_text, fp);
    fputs(usage_tail, fp);
    fputs(usage_output_text, fp);
}

/* Under a launcher with several ranks, a rank's errors before its run (its
 * command line, its job file, its model's download) are held here until the
 * ranks agreed who says why (run_job): the first rank that failed, as at
 * the run's start check. Every rank reads the same command line, so its
 * error came out once per rank; but an error need not be the same on every
 * rank (a job file or a model one node cannot read, ranks started with
 * other arguments), so a rank is not silenced on the guess that rank 0
 * failed alike: it is silenced only when a rank before it did fail. NULL:
 * said at once (one process, or no memory to hold it). */
static FILE *held;
static char *held_text;
static size_t held_len;

static FILE *err_out(void) { return held ? held : stderr; }

static void hold_errors(void)
{
    if (!held && sl_dist_launched_size() > 1)
        held = open_memstream(&held_text, &held_len);
}

/* Ends the hold: what was held is said when `say`, else dropped. */
static void release_errors(bool say)
{
    if (!held)
        return;
    fclose(held);
    held = NULL;
    if (say && held_text)
        fputs(held_text, stderr);
    free(held_text);
    held_text = NULL;
}

/* A library error may name what the data held (a manifest's path, a
 * server's answer): printed defanged, whole. */
static void say_error(const char *msg)
{
    fputs("sluice: ", err_out());
    printer_put_text(err_out(), msg, SIZE_MAX, true);
    fputc('\n', err_out());
}

/* A library error that names settings by their flags, said in the terms
 * they were given in: a job file's keys, at their line. */
static void say_config_error(const sl_config *cfg, const char *msg)
{
    char said[2048];
    sl_config_explain(cfg, msg, said, sizeof said);
    say_error(said);
}

/* Under a launcher, a command that only prints (help, --version, config):
 * each rank printed it whole, 4 ranks 4 copies. It reads the same command
 * line and files on every rank, so rank 0 alone prints, the others to
 * /dev/null, each with its own exit status: a rank whose config check
 * differs (a job file its node cannot read) is still named by mpirun. */
static void print_on_rank_0_alone(void)
{
    if (sl_dist_launched_rank() == 0)
        return;
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC); /* dup2 clears it on 1 and 2 */
    if (fd < 0)
        return;
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

static void print_version(void)
{
    printf("sluice %s%s\nllama.cpp: %s\nbuild: %s\n", SL_VERSION,
           sl_dist_available() ? " (MPI)" : "", sl_llama_version(), sl_build_id());
}

/* A wrong command line of `sluice NAME` (caption, batch): what, and where
 * the options are told. */
static int usage_error(const char *name, const char *what)
{
    fprintf(err_out(), "sluice: %s\nRun 'sluice %s --help' for the options.\n", what, name);
    return EXIT_USAGE;
}

/* --- flags: the library's settings table, as getopt options ---------------------------- */

/* Which command reads the flags: a job file's commands name its keys in
 * their messages, `caption` names flags. */
typedef struct command {
    const char *name;     /* "caption", "run", "config print", "config check" */
    const char *job_file; /* run and config: the job file; NULL for caption */
} command;

enum { MAX_FLAG_OPTS = 128, OPT_HELP = 1000, OPT_VERSION = 1001 };

typedef struct flag_use {
    int opt;           /* index in the settings table */
    const char *value; /* NULL: a switch given alone */
} flag_use;

/* getopt_long's error c ('?': an unknown, ambiguous or valueless-taking
 * option; ':': one missing its value), said in the flag's terms; `within`
 * is the word getopt was in as the call began. An ambiguous beginning
 * ("--max-tok") names every flag it begins. */
static void flag_error(char **argv, int c, const struct option *longs, const char *within)
{
    const char *word = argv[optind - 1];
    /* "-q=true": getopt reads -q, then '=' as a flag, in the word it was
     * in: optind is past it only when '=' ended it ("-q="), and the word
     * before is no guide ("-p -x= -q=1" named "-x=" as the flag's). */
    if (c == '?' && optopt == '=' && within) {
        size_t at = strcspn(within, "=");
        for (size_t i = 0; at >= 2 && i < sl_config_option_count(); i++) {
            sl_config_option o;
            sl_config_option_at(i, &o);
            if (o.flag && o.is_switch && o.short_flag == within[at - 1]) {
                fprintf(err_out(), "sluice: %s: -%c takes no value: give -%c alone", within,
                        o.short_flag, o.short_flag);
                /* "--quiet=" would be refused too: an empty value is none to move */
                if (within[at + 1])
                    fprintf(err_out(), ", or --%s%s", o.flag, within + at);
                fputc('\n', err_out());
                return;
            }
        }
    }
    if (c == '?' && optopt > 0 && optopt < 256 && !(word[0] == '-' && word[1] == '-')) {
        fprintf(err_out(), "sluice: unknown option '-%c'\n", optopt);
        return;
    }
    if (c == ':') {
        fprintf(err_out(), "sluice: option '%s' needs a value\n", word);
        return;
    }
    int len = (int)strcspn(word, "=");
    if (optopt != 0) { /* a flag that takes no value, given one */
        fprintf(err_out(), "sluice: option '%.*s' takes no value\n", len, word);
        return;
    }
    fprintf(err_out(), "sluice: unknown option '%.*s'", len, word);
    const char *instead = len > 2 ? sl_config_foreign_missing(word + 2, (size_t)len - 2) : NULL;
    if (instead) { /* --min-tokens is no --max-tokens misspelt */
        fprintf(err_out(), ": %s\n", instead);
        return;
    }
    int n = 0, k = 0;
    for (const struct option *o = longs; o->name; o++)
        n += len > 2 && strncmp(o->name, word + 2, (size_t)len - 2) == 0;
    for (const struct option *o = longs; n && o->name; o++)
        if (len > 2 && strncmp(o->name, word + 2, (size_t)len - 2) == 0)
            fprintf(err_out(), "%s--%s", !k++ ? ": did you mean " : k < n ? ", " : " or ", o->name);
    if (n) {
        fprintf(err_out(), "? (flags are taken by their whole name)\n");
        return;
    }
    /* --top_p, as a job file's key or Python's keyword writes it */
    for (const struct option *o = longs; len > 2 && o->name; o++) {
        if (sl_config_same_name(o->name, word + 2, (size_t)len - 2)) {
            fprintf(err_out(), ": did you mean --%s?\n", o->name);
            return;
        }
    }
    /* --n, --max-model-len: another tool's name for one of ours */
    const char *whose;
    sl_config_option o;
    int i = len > 2 ? sl_config_foreign_name(word + 2, (size_t)len - 2, &whose) : -1;
    if (i >= 0 && sl_config_option_at((size_t)i, &o) && o.flag)
        fprintf(err_out(), ": did you mean --%s (%s)?", o.flag, whose);
    fputc('\n', err_out());
}

/* getopt over the settings table: every flag is a setting with a job-file
 * key, so a flag without a key cannot be added. The flags given are
 * collected in `uses` (argc at most) and applied later, after a job file
 * was read, so they override it. Positional arguments are left from
 * optind on. Returns 0, EXIT_USAGE, -1 for --help or -2 for --version (neither printed). */
static int parse_flags(int argc, char **argv, const char *name, flag_use *uses, int *n_uses)
{
    static struct option longs[MAX_FLAG_OPTS + 3];
    static char shorts[2 * MAX_FLAG_OPTS + 4];
    size_t n_opts = sl_config_option_count(), n_long = 0, n_short = 0;
    shorts[n_short++] = ':'; /* a missing value is ':', told apart from an unknown flag */
    for (size_t i = 0; i < n_opts && n_long < MAX_FLAG_OPTS; i++) {
        sl_config_option o;
        sl_config_option_at(i, &o);
        if (!o.flag)
            continue;
        longs[n_long++] = (struct option){o.flag, o.is_switch ? optional_argument
                                                              : required_argument, 0, 256 + (int)i};
        if (o.short_flag) {
            shorts[n_short++] = (char)o.short_flag;
            if (!o.is_switch)
                shorts[n_short++] = ':';
        }
    }
    longs[n_long++] = (struct option){"help", no_argument, 0, OPT_HELP};
    /* --help lists --version among every command's options: each takes it */
    longs[n_long++] = (struct option){"version", no_argument, 0, OPT_VERSION};
    longs[n_long] = (struct option){0, 0, 0, 0};
    shorts[n_short++] = 'h';
    shorts[n_short] = '\0';
    /* getopt's own messages name argv[0] ("print: option '--max-tok' is
     * ambiguous"), the subcommand's word, and skip the "did you mean"
     * below: its errors are told here ('?', ':' for a missing value). */
    opterr = 0;
    /* "--ordered false": a switch's value goes after '=', so the word
     * would be read as an INPUT and reported missing; say what was meant. */
    for (int i = 1; i + 1 < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i + 1], "true") != 0 && strcmp(argv[i + 1], "false") != 0)
            continue;
        for (size_t k = 0; k < n_opts; k++) {
            sl_config_option o;
            sl_config_option_at(k, &o);
            bool named = o.flag && argv[i][0] == '-' &&
                         ((argv[i][1] == '-' && strcmp(argv[i] + 2, o.flag) == 0) ||
                          (o.short_flag && argv[i][1] == o.short_flag && !argv[i][2]));
            if (o.is_switch && named) {
                fprintf(err_out(), "sluice: %s %s: a switch takes its value after '=' "
                                "(--%s=%s); '%s' alone would be read as an input\n",
                        argv[i], argv[i + 1], o.flag, argv[i + 1], argv[i + 1]);
                fprintf(err_out(), "Run 'sluice %s --help' for the options.\n", name);
                return EXIT_USAGE;
            }
        }
    }
    *n_uses = 0;
    optind = 1;
    int c, at;
    for (int word_at = optind; (c = getopt_long(argc, argv, shorts, longs, &at)) != -1;
         word_at = optind) {
        if (c == '?' || c == ':') {
            flag_error(argv, c, longs, word_at < argc ? argv[word_at] : NULL);
            fprintf(err_out(), "Run 'sluice %s --help' for the options.\n", name);
            return EXIT_USAGE;
        }
        /* getopt_long takes any unambiguous prefix (--temp for
         * --temperature): a script written so would change meaning, or
         * stop, the day a flag sharing the prefix is added. Only whole
         * names are taken. The option's word is the last one read, or the
         * one before its separate value. */
        if (c >= 256 || c == OPT_HELP || c == OPT_VERSION) {
            const char *word = argv[optind - 1];
            if (optarg && optarg == word && optind >= 2)
                word = argv[optind - 2];
            if (word[0] == '-' && word[1] == '-' &&
                strncmp(word + 2, longs[at].name, strcspn(word + 2, "=")) == 0 &&
                strlen(longs[at].name) != strcspn(word + 2, "=")) {
                fprintf(err_out(), "sluice: unknown option '%.*s': did you mean --%s? (flags are "
                                "taken by their whole name)\n",
                        (int)strcspn(word, "="), word, longs[at].name);
                fprintf(err_out(), "Run 'sluice %s --help' for the options.\n", name);
                return EXIT_USAGE;
            }
        }
        if (c == 'h' || c == OPT_HELP)
            return -1;
        if (c == OPT_VERSION)
            return -2;
        int opt = -1;
        if (c >= 256 && c < 256 + (int)n_opts) {
            opt = c - 256;
        } else {
            for (size_t i = 0; i < n_opts && opt < 0; i++) {
                sl_config_option o;
                sl_config_option_at(i, &o);
                if (o.short_flag == c)
                    opt = (int)i;
            }
        }
        if (opt < 0) {
            fprintf(err_out(), "Run 'sluice %s --help' for the options.\n", name);
            return EXIT_USAGE;
        }
        /* "-n=5": getopt takes "=5" as the value, which was then refused
         * as "got '=5'" with no word of the form a short flag takes. A
         * value of its own word ("-n =5") is the user's. */
        if (c < 256 && optarg && optarg[0] == '=' && optarg != argv[optind - 1]) {
            sl_config_option o;
            sl_config_option_at((size_t)opt, &o);
            fprintf(err_out(), "sluice: %s: -%c takes its value as -%c %s (or --%s=%s)\n",
                    argv[optind - 1], c, c, optarg + 1, o.flag, optarg + 1);
            fprintf(err_out(), "Run 'sluice %s --help' for the options.\n", name);
            return EXIT_USAGE;
        }
        uses[(*n_uses)++] = (flag_use){opt, optarg};
    }
    return 0;
}

static int apply_flags(sl_config *cfg, const flag_use *uses, int n_uses)
{
    sl_config_begin_layer(cfg);
    for (int i = 0; i < n_uses; i++) {
        sl_config_option o;
        sl_config_option_at((size_t)uses[i].opt, &o);
        const char *value = uses[i].value ? uses[i].value : o.is_switch ? "true" : "";
        if (sl_config_set_flag(cfg, o.flag, value) != SL_OK) {
            say_error(sl_last_error());
            return EXIT_USAGE;
        }
    }
    return 0;
}

/* What a run needs that no default gives; the message names the flag for
 * `caption`, the key (and the flag) for a job file. */
static int check_ready(const sl_config *cfg, const command *cmd)
{
    const sl_caption_params *p = sl_config_params(cfg);
    const char *job = cmd->job_file;
    char msg[512];
    bool openai = p->engine && strcmp(p->engine, "openai") == 0;
    bool batch = p->input_format && strcmp(p->input_format, "openai-batch") == 0;
    bool batch_cmd = strcmp(cmd->name, "batch") == 0;
    if (p->n_inputs == 0) {
        if (batch_cmd)
            return usage_error("batch", "batch needs a requests file: sluice batch "
                                        "REQUESTS.jsonl -o OUTPUT_DIR");
        if (!job)
            return usage_error("caption", "caption needs an input: a folder, manifest, tar "
                                          "shards or Parquet files");
        snprintf(msg, sizeof msg, "%s sets no inputs: add input.paths (folders, manifests, tar "
                 "shards, Parquet files), or give INPUT arguments after it", job);
    } else if (!p->output_dir) {
        if (batch_cmd)
            return usage_error("batch", "batch needs an output folder: sluice batch "
                                        "REQUESTS.jsonl -o OUTPUT_DIR");
        if (!job)
            return usage_error("caption", "caption needs an output folder: -o DIR");
        snprintf(msg, sizeof msg, "%s sets no output folder: add output.dir, or pass -o DIR",
                 job);
    } else if (p->dry_run) {
        return 0; /* no model is opened, no server asked */
    } else if (openai && p->openai.n_endpoints == 0) {
        if (!job)
            return usage_error(cmd->name, "--engine openai needs a server: --endpoint URL or "
                                          "--endpoints-file F");
        snprintf(msg, sizeof msg, "%s: engine openai needs a server: add openai.endpoints (or "
                 "openai.endpoints_file), or pass --endpoint URL", job);
    } else if (!p->engine && p->openai.n_endpoints > 0) {
        /* Servers named, the engine left at its default (llama): the user
         * forgot --engine openai, and would be told only that a model is
         * missing, or with one the servers would go unused. An engine set
         * to llama on purpose (over a job file's openai) leaves them be. */
        if (!job)
            return usage_error(cmd->name, "--endpoint and --endpoints-file name servers for "
                                          "--engine openai, and the engine is llama (in-process, "
                                          "the default): add --engine openai, or drop them");
        snprintf(msg, sizeof msg, "%s sets openai.endpoints but no engine (llama, the default, "
                 "does not use them): add engine: openai (or pass --engine openai), or drop "
                 "them", job);
    } else if (!job && !openai && p->openai.n_endpoints > 0) {
        /* Both on one command line: the servers would go unused. */
        return usage_error(cmd->name, "--endpoint and --endpoints-file name servers for "
                                      "--engine openai, and --engine llama runs the model in "
                                      "this process: drop one of them");
    } else if (!openai && !p->llama.model_path) {
        if (!job) {
            snprintf(msg, sizeof msg, "%s needs a model: --model PATH.gguf or hf://ORG/REPO",
                     cmd->name);
            return usage_error(cmd->name, msg);
        }
        snprintf(msg, sizeof msg, "%s sets no model: add llama.model (PATH.gguf or "
                 "hf://ORG/REPO), or pass --model", job);
    } else if (!openai && !batch && !p->llama.mmproj_path &&
               !sl_hub_is_ref(p->llama.model_path)) {
        /* a hub model brings its projector: known after the fetch */
        if (!job)
            return usage_error(cmd->name, "caption needs a vision projector: --mmproj "
                                          "PATH.gguf");
        snprintf(msg, sizeof msg, "%s sets no vision projector: add llama.mmproj (PATH.gguf), "
                 "or pass --mmproj", job);
    } else {
        return 0;
    }
    fprintf(err_out(), "sluice: %s\n", msg);
    return EXIT_USAGE;
}

static int run_job(const sl_config *cfg, const command *cmd, int failed);

static void print_run_usage(FILE *fp)
{
    fputs("usage: sluice run JOB.yaml [INPUT...] [options]\n"
          "       sluice config print JOB.yaml [INPUT...] [options]\n"
          "       sluice config check JOB.yaml [INPUT...] [options]\n"
          "       sluice config keys\n"
          "\n"
          "run: the job a YAML job file describes (docs/jobs.md). Every option of\n"
          "'sluice caption' has a key in the file; options given here override it, INPUT\n"
          "arguments replace its input.paths, and =false turns off a switch the file\n"
          "turned on (--ordered=false). Interrupted? The same command again goes on\n"
          "where it stopped.\n"
          "config print: the effective settings, every key with its default, as a job file\n"
          "that 'sluice run' reads back. config check: read and check the file and the\n"
          "options without running (exit 0, or 2 and what to change). config keys: each\n"
          "key with its flag.\n\n", fp);
    print_usage(fp);
}

/* Reads the command line of caption, run and config print/check into a
 * config: the job file first (run, config), then the flags over it, then
 * INPUT arguments. Returns 0 with *out set, or the exit status. */
static int build_config(int argc, char **argv, command *cmd, sl_config **out)
{
    *out = NULL;
    flag_use *uses = calloc((size_t)argc + 1, sizeof *uses);
    sl_config *cfg = NULL;
    int n_uses, rc = 0;
    if (!uses || sl_config_new(&cfg) != SL_OK) {
        fprintf(err_out(), "sluice: out of memory\n");
        rc = EXIT_RUN;
        goto done;
    }
    if ((rc = parse_flags(argc, argv, cmd->name, uses, &n_uses)) != 0) {
        if (rc < 0)
            print_on_rank_0_alone();
        if (rc == -2) {
            print_version();
            rc = EXIT_HELP;
        } else if (rc == -1) {
            if (cmd->job_file)
                print_run_usage(stdout);
            else
                print_usage(stdout);
            rc = EXIT_HELP;
        }
        goto done;
    }
    int first_input = optind;
    if (cmd->job_file) {
        if (optind >= argc) {
            fprintf(err_out(), "sluice: %s needs a job file: sluice %s JOB.yaml (docs/jobs.md)\n",
                    cmd->name, cmd->name);
            rc = EXIT_USAGE;
            goto done;
        }
        cmd->job_file = argv[optind];
        first_input = optind + 1;
        sl_status st = sl_config_load_file(cfg, cmd->job_file);
        if (st != SL_OK) {
            say_error(sl_last_error());
            rc = st == SL_ERR_NOMEM ? EXIT_RUN : EXIT_USAGE;
            goto done;
        }
    }
    if (strcmp(cmd->name, "batch") == 0 &&
        sl_config_set(cfg, "input.format", "openai-batch") != SL_OK) {
        say_error(sl_last_error());
        rc = EXIT_RUN;
        goto done;
    }
    if ((rc = apply_flags(cfg, uses, n_uses)) != 0)
        goto done;
    /* --input-format over batch's openai-batch ran the file as a caption
     * job's manifest of that format: batch reads only batch files. */
    const char *format = sl_config_params(cfg)->input_format;
    if (strcmp(cmd->name, "batch") == 0 && (!format || strcmp(format, "openai-batch") != 0)) {
        char msg[256];
        snprintf(msg, sizeof msg, "--input-format %s does not apply: sluice batch reads OpenAI "
                 "batch files (openai-batch); drop it, or use sluice caption", format ? format
                 : "auto");
        rc = usage_error("batch", msg);
        goto done;
    }
    for (int i = first_input; i < argc; i++) {
        if (sl_config_set(cfg, "input.paths", argv[i]) != SL_OK) {
            say_error(sl_last_error());
            rc = EXIT_USAGE;
            goto done;
        }
    }
    /* Settling the settings warns of what will not be used; -q silences it.
     * Under mpirun every rank reads the same command line: rank 0 speaks
     * for the job (4 ranks printed each warning 4 times). */
    sl_log_set_level(sl_config_console_settings(cfg).quiet || sl_dist_launched_rank() != 0
                         ? SL_LOG_ERROR : SL_LOG_WARN);
    if (sl_config_resolve(cfg) != SL_OK) {
        say_error(sl_last_error());
        rc = EXIT_USAGE;
        goto done;
    }
done:
    free(uses);
    if (rc)
        sl_config_free(cfg);
    else
        *out = cfg;
    return rc;
}

/* caption (job_file NULL) and run (job_file "": the first argument). */
static int cmd_job(int argc, char **argv, command cmd)
{
    hold_errors();
    sl_config *cfg;
    int rc = build_config(argc, argv, &cmd, &cfg);
    if (rc == EXIT_HELP) {
        release_errors(true);
        return 0;
    }
    if (!rc)
        rc = check_ready(cfg, &cmd);
    rc = run_job(cfg, &cmd, rc);
    sl_config_free(cfg);
    return rc;
}

static void print_keys(void)
{
    size_t n = sl_config_option_count();
    for (size_t i = 0; i < n; i++) {
        sl_config_option o;
        sl_config_option_at(i, &o);
        char flag[64] = "(job file only)";
        /* INPUT arguments: after 'caption', or after the job file of 'run' */
        if (o.flag)
            snprintf(flag, sizeof flag, "%s%c%s--%s%s%s", o.short_flag ? "-" : "",
                     o.short_flag ? o.short_flag : ' ', o.short_flag ? ", " : "", o.flag,
                     o.is_switch ? "" : " ", o.is_switch ? "" : o.arg);
        if (!o.short_flag && o.flag)
            memmove(flag, flag + 1, strlen(flag)); /* no short flag: no leading blank */
        if (strcmp(o.key, "input.paths") == 0)
            snprintf(flag, sizeof flag, "INPUT arguments");
        printf("%-28s %-30s %s\n", o.key, flag, o.help);
    }
}

static int cmd_config(int argc, char **argv)
{
    print_on_rank_0_alone();
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        print_run_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "keys") == 0) {
        if (argc == 3 && (strcmp(argv[2], "-h") == 0 || strcmp(argv[2], "--help") == 0)) {
            print_run_usage(stdout);
            return 0;
        }
        if (argc > 2) { /* not a filter: all keys were printed, the word ignored */
            fprintf(stderr, "sluice: config keys takes no arguments, got '%s'; it prints every "
                            "key (grep its output for one)\n", argv[2]);
            return EXIT_USAGE;
        }
        print_keys();
        return 0;
    }
    bool print = strcmp(argv[1], "print") == 0;
    if (!print && strcmp(argv[1], "check") != 0) {
        fprintf(stderr, "sluice: unknown 'config %s'; it is config print, config check or config "
                        "keys\n", argv[1]);
        return EXIT_USAGE;
    }
    command cmd = {print ? "config print" : "config check", ""};
    sl_config *cfg;
    int rc = build_config(argc - 1, argv + 1, &cmd, &cfg);
    if (rc)
        return rc == EXIT_HELP ? 0 : rc;
    if (print) {
        if (sl_config_write_yaml(cfg, stdout) != SL_OK) {
            say_error(sl_last_error());
            rc = EXIT_USAGE;
        }
    } else if ((rc = check_ready(cfg, &cmd)) == 0) {
        if (sl_caption_check(sl_config_params(cfg)) != SL_OK) {
            say_config_error(cfg, sl_last_error());
            rc = EXIT_USAGE;
        } else {
            printf("%s: ok\n", cmd.job_file);
        }
    }
    sl_config_free(cfg);
    return rc;
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
    say_error(sl_last_error());
    return st == SL_ERR_IO || st == SL_ERR_NOMEM ? EXIT_RUN : EXIT_USAGE;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* "s" after a count other than one: "1 row", "2 rows" ("1 rows written"
 * was printed). */
static const char *plural(long n) { return n == 1 ? "" : "s"; }

/* Where the rows went: the output folder and the part files this run
 * committed, named when few, the first and last of many (under MPI only
 * counted: the ranks' parts interleave). */
static void describe_output(char *out, size_t cap, const sl_caption_summary *s, const char *dir)
{
    const char *first = base_name(s->first_output_file), *last = base_name(s->last_output_file);
    if (s->shards <= 0)
        snprintf(out, cap, "%s (no part file committed)", dir);
    else if (!first[0] || !last[0])
        snprintf(out, cap, "%s (%ld part file%s)", dir, s->shards, plural(s->shards));
    else if (s->shards == 1)
        snprintf(out, cap, "%s (1 part file: %s)", dir, last);
    else
        snprintf(out, cap, "%s (%ld part files: %s%s%s)", dir, s->shards, first,
                 s->shards == 2 ? ", " : " to ", last);
}

/* A dry run's last lines: the counts, the failures by stage and cause, how
 * fast the inputs were read and decoded, and whether decoding would keep
 * up (its capacity from its busy time). */
static void print_dry_run(const sl_caption_summary *s, const sl_caption_params *p)
{
    double secs = s->seconds > 0 ? s->seconds : 0;
    if (s->rows_skipped)
        printf("\nresumed: %ld input%s skipped, done by an earlier run", s->rows_skipped,
               plural(s->rows_skipped));
    printf("\ndry run (no model): %ld row%s: %ld read and decoded, %ld failed", s->rows,
           plural(s->rows), s->rows_ok, s->rows_failed);
    for (int i = 0; i < s->n_failures; i++)
        printf("%s%ld %s at %s", i ? ", " : " (", s->failures[i].rows, s->failures[i].cause,
               s->failures[i].stage);
    printf("%s in %.2f s\n", s->n_failures ? ")" : "", s->seconds);
    printf("read %.1f MB: %.2f rows/s, %.2f MB/s", s->input_bytes / 1e6,
           secs > 0 ? s->rows / secs : 0.0, secs > 0 ? s->input_bytes / 1e6 / secs : 0.0);
    if (p->engine && strcmp(p->engine, "openai") == 0)
        printf("; JPEGs to send %.1f MB", s->jpeg_bytes / 1e6);
    int workers = p->decode_workers > 0 ? p->decode_workers : 1;
    char output[8400];
    describe_output(output, sizeof output, s, p->output_dir);
    printf("\nbusy: decode %.2f s over %d worker%s (%.1f rows/s if never waiting), write "
           "%.2f s; peak memory in flight %.1f MB of %.0f MB\noutput: %s\nreport: "
           "%s/_report.html\n", s->decode_busy_s, workers, workers == 1 ? "" : "s",
           s->decode_busy_s > 0 ? s->rows / s->decode_busy_s * workers : 0.0, s->write_busy_s,
           s->peak_bytes_in_flight / 1e6, s->memory_budget / 1e6, output, p->output_dir);
}

/* The exit status of a run that failed with st. */
static int exit_code_of(sl_status st)
{
    switch (st) {
    case SL_ERR_INVALID_ARG: case SL_ERR_NOT_FOUND: case SL_ERR_EXISTS: case SL_ERR_MODEL:
        return EXIT_USAGE;
    case SL_ERR_STOPPED:
        return EXIT_STOPPED;
    case SL_ERR_BUSY:
        return EXIT_BUSY;
    default:
        return EXIT_RUN;
    }
}

/* A run that went to the end: 3 while the output holds a failed row, its
 * own or an earlier run's. The same command twice exits alike: a rerun that
 * found everything done exited 0 over rows that had failed, so a scheduler's
 * retry of an exit 3 (Kubernetes, Slurm --requeue) marked them succeeded. */
static int exit_code_of_output(const sl_caption_summary *sum)
{
    return sum->rows_failed > 0 || sum->rows_failed_before > 0 ? EXIT_ROWS_FAILED : 0;
}

static int run_job_on(const sl_config *cfg, const command *cmd, sl_dist *dist)
{
    sl_caption_params p = *sl_config_params(cfg);
    sl_config_console console = sl_config_console_settings(cfg);
    printer pr = {.show = console.show, .quiet = console.quiet, .tty = isatty(STDERR_FILENO),
                  .line_every = console.progress_every_s};
    p.dist = dist;
    if (sl_dist_rank(dist) != 0) /* rank 0 speaks for the job */
        pr.quiet = pr.hide_failed = true;
    bool openai = p.engine && strcmp(p.engine, "openai") == 0;

    /* A rank other than 0 shows errors alone: its warnings (a hub download
     * resumed, a cached model used while the hub is out of reach, another
     * rank's download waited for) would repeat rank 0's, or matter less.
     * Its errors stay its own, printed by each rank that meets them: a
     * model that does not load, a GPU out of memory, a file its node cannot
     * read may be one node's alone (a download that fails is held and said
     * once, by the first rank that failed: run_job). */
    sl_log_set_level(pr.quiet ? SL_LOG_ERROR : console.verbose ? SL_LOG_DEBUG : SL_LOG_WARN);
    static sl_hub_files model_files, projector_files;
    if (!openai && !p.dry_run) {
        int hub_exit = fetch_from_hub(&p.llama.model_path, &p.llama.mmproj_path, &model_files,
                                      &projector_files, pr.quiet);
        if (hub_exit)
            return hub_exit;
    }
    bool batch = p.input_format && strcmp(p.input_format, "openai-batch") == 0;
    pr.unit = batch ? "requests" : NULL;
    if (!openai && !batch && !p.dry_run && !p.llama.mmproj_path) {
        if (!cmd->job_file)
            return usage_error(cmd->name, "caption needs a vision projector: --mmproj "
                                          "PATH.gguf");
        fprintf(err_out(), "sluice: %s sets no vision projector and model %s has none: add "
                        "llama.mmproj (PATH.gguf), or pass --mmproj\n", cmd->job_file,
                sl_config_params(cfg)->llama.model_path);
        return EXIT_USAGE;
    }

    release_errors(true); /* none: from here on the run's own errors agree (below) */

    p.on_row = printer_row;
    p.on_row_user = &pr;
    p.on_metrics_url = printer_metrics_url;
    pr.token_file = p.metrics_token_file;
    p.on_progress = printer_progress;
    p.progress_ms = pr.tty ? 1000 : (int)(pr.line_every * 1000 < 1000 ? pr.line_every * 1000 : 1000);
    p.stop_requests = &stop_requests;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* Under nohup SIGHUP is ignored, and stays so: a hangup must not stop
     * a run its user meant to outlive the session. */
    struct sigaction hup;
    if (sigaction(SIGHUP, NULL, &hup) == 0 && hup.sa_handler != SIG_IGN)
        sigaction(SIGHUP, &sa, NULL);
    struct sigaction stuck = {.sa_handler = exit_stuck};
    sigemptyset(&stuck.sa_mask);
    sigaction(SIGALRM, &stuck, NULL);

    sl_caption_summary sum;
    printer_init(&pr);
    sl_status st = sl_caption_run(&p, &sum);
    alarm(0); /* the run ended: nothing is stuck */
    printer_finish(&pr);
    if (st != SL_OK && !sl_dist_reported(dist)) /* failed before the ranks agreed to start */
        st = sl_dist_fail_start(dist, st);
    if (st != SL_OK && sl_dist_quiet(dist)) /* the first rank that failed says why */
        return exit_code_of(st);
    switch (st) {
    case SL_OK:
        break;
    case SL_ERR_INVALID_ARG: case SL_ERR_NOT_FOUND: case SL_ERR_EXISTS: case SL_ERR_MODEL:
        say_config_error(cfg, sl_last_error());
        return exit_code_of(st);
    case SL_ERR_STOPPED: case SL_ERR_TOO_MANY_FAILED: case SL_ERR_STAGE: {
        /* The run ended early; what finished is committed. */
        char output[8400];
        describe_output(output, sizeof output, &sum, p.output_dir);
        say_config_error(cfg, sl_last_error());
        fprintf(stderr, "sluice: %ld row%s written (%ld failed) to %s\n", sum.rows,
                plural(sum.rows), sum.rows_failed, output);
        /* The progress line counted them done: without this line a
         * filter's stop read as inputs gone missing. */
        if (sum.rows_dropped > 0)
            fprintf(stderr, "sluice: %ld row%s dropped by a stage (not written; done: a rerun "
                            "skips them)\n", sum.rows_dropped, plural(sum.rows_dropped));
        if (sum.rows_deferred > 0)
            fprintf(stderr, "sluice: stopping: %ld queued row%s not sent; resume redoes them\n",
                    sum.rows_deferred, plural(sum.rows_deferred));
        /* The rows in flight at the stop are finished and written: they may
         * have been the last, and then a rerun has nothing to do. */
        if (sum.inputs_all_done)
            fprintf(stderr, "sluice: every input is done (the last were in flight at the stop); "
                            "--retry-failed captions the failed ones again\n");
        else
            fprintf(stderr, "sluice: run the same command again to go on from there\n");
        return exit_code_of(st);
    }
    default:
        say_config_error(cfg, sl_last_error());
        return exit_code_of(st);
    }
    /* A resumed run whose new rows a filter all dropped did work: it is
     * not one that found everything done. */
    if (sum.rows == 0 && sum.rows_dropped == 0 && sum.resumed) {
        if (!pr.quiet)
            printf("all inputs were already done: %s holds their %ld row%s from an earlier run "
                   "(%ld input%s skipped now); nothing new written\n", p.output_dir,
                   sum.rows_done_before, plural(sum.rows_done_before), sum.rows_skipped,
                   plural(sum.rows_skipped));
        if (!pr.quiet && sum.rows_failed_before > 0)
            printf(batch ? "%ld of those requests failed: docs/batch.md#resume says how to "
                           "answer them again\n"
                         : "%ld of those rows failed: --retry-failed captions their inputs "
                           "again\n",
                   sum.rows_failed_before);
        return exit_code_of_output(&sum);
    }
    if (!pr.quiet && sum.dry_run)
        print_dry_run(&sum, &p);
    else if (!pr.quiet) {
        /* A stage's dropped rows (a filter's) are done but not written:
         * counted apart from the rows written, a filter that kept nothing
         * said "0 images: 0 captioned, 0 failed" of 16 it had answered. */
        long answered = sum.rows + sum.rows_dropped;
        char dropped[80] = "";
        if (sum.rows_dropped > 0)
            snprintf(dropped, sizeof dropped, ", %ld dropped by a stage (not written)",
                     sum.rows_dropped);
        double rate = sum.seconds > 0 ? answered / sum.seconds : 0;
        double tps = sum.seconds > 0 ? sum.generated_tokens / sum.seconds : 0;
        /* With --rows-per-task an image is a row per task, with --samples
         * a row per answer (with both, per task and answer); the console
         * showed each image once, its answers together. */
        bool per_task = p.rows_per_task && p.n_tasks > 0 && !batch;
        bool per_answer = p.sampling.n > 1 && !batch;
        long per = (per_task ? p.n_tasks : 1) * (per_answer ? p.sampling.n : 1);
        if (pr.show > 0 && sum.rows_ok / per > pr.shown) { /* --show 0: none asked for */
            long more = sum.rows_ok / per - pr.shown;
            printf("... and %ld more %s%s\n", more,
                   per_task || per_answer ? (more == 1 ? "image answered" : "images answered")
                   : batch                ? "answer"
                                          : "caption",
                   per_task || per_answer ? "" : plural(more));
        }
        if (sum.rows_skipped)
            printf("\nresumed: %ld input%s skipped, done by an earlier run", sum.rows_skipped,
                   plural(sum.rows_skipped));
        printf(batch ? "\n%ld request%s: %ld answered, %ld failed%s in %.2f s (%.2f requests/s, "
                     : per_task && per_answer
                         ? "\n%ld row%s, one per image, task and answer: %ld answered, %ld "
                           "failed%s in %.2f s (%.2f rows/s, "
                     : per_task ? "\n%ld row%s, one per image and task: %ld answered, %ld failed"
                                  "%s in %.2f s (%.2f rows/s, "
                     : per_answer ? "\n%ld row%s, one per image and answer: %ld answered, %ld "
                                    "failed%s in %.2f s (%.2f rows/s, "
                     : "\n%ld image%s: %ld captioned, %ld failed%s in %.2f s (%.2f images/s, ",
               answered, plural(answered), sum.rows_ok, sum.rows_failed, dropped, sum.seconds,
               rate);
        char output[8400];
        describe_output(output, sizeof output, &sum, p.output_dir);
        printf("%.1f tokens/s; model '", tps);
        printer_put_text(stdout, sum.model_name, 256, false); /* the GGUF's or server's word */
        printf("' loaded in %.2f s)\n"
               "busy: decode %.2f s, engine %.2f s, write %.2f s; peak memory in flight %.1f MB "
               "of %.0f MB\noutput: %s\nreport: %s/_report.html\n",
               sum.load_seconds, sum.decode_busy_s, sum.engine_busy_s, sum.write_busy_s,
               sum.peak_bytes_in_flight / 1e6, sum.memory_budget / 1e6, output, p.output_dir);
        if (sum.answers[0])
            printf("answers: %s\n", sum.answers);
        if (sum.answers_dropped[0])
            printf("answers dropped by a stage (not written): %s\n", sum.answers_dropped);
        if (sum.rows_failed_before > 0)
            printf(batch ? "the output also holds %ld failed request%s of earlier runs: "
                           "docs/batch.md#resume says how to answer them again\n"
                         : "the output also holds %ld failed row%s of earlier runs: "
                           "--retry-failed captions their inputs again\n",
                   sum.rows_failed_before, plural(sum.rows_failed_before));
    }
    return exit_code_of_output(&sum);
}

/* Under mpirun or srun, one rank of the job (sluice/dist.h). A rank that
 * fails before the ranks agreed to start stops them all there; one that
 * fails later, before rank 0 heard from it, ends the whole job: the others
 * would wait for it. `failed`: the exit status of a command line or job
 * file that was refused (its error held, hold_errors), else 0: the ranks
 * learn of it at once, before any downloads its model, and who says why. */
static int run_job(const sl_config *cfg, const command *cmd, int failed)
{
    /* The console is a log: when its reader goes away (`sluice ... | tee
     * log` and tee ends) what cannot be printed is lost, and the run goes
     * on; SIGPIPE would end it on the spot, losing the rows in flight. */
    signal(SIGPIPE, SIG_IGN);
    /* Before MPI's threads start: libvips and ggml write the environment
     * as they start (sluice/image.h, sluice/engine.h). */
    const sl_caption_params *p = failed ? NULL : sl_config_params(cfg);
    if (!failed && sl_image_init() != SL_OK) {
        say_error(sl_last_error());
        failed = EXIT_RUN;
    }
    if (!failed && !p->dry_run && !(p->engine && strcmp(p->engine, "openai") == 0))
        sl_llama_init();
    sl_dist *dist = NULL;
    if (sl_dist_open(&dist) != SL_OK) {
        release_errors(true);
        say_error(sl_last_error());
        return failed ? failed : EXIT_USAGE;
    }
    sl_status agreed = sl_dist_agree_settings(dist, !failed ? SL_OK : failed == EXIT_USAGE
                                                    ? SL_ERR_INVALID_ARG : SL_ERR_IO);
    int code = dist && agreed != SL_OK ? exit_code_of(agreed)
               : failed                ? failed
                                       : run_job_on(cfg, cmd, dist);
    /* Failed before its run (a model's download): the other ranks stop
     * with it at their start, or, when they have started, are ended. */
    if (dist && code != 0 && code != EXIT_ROWS_FAILED && !sl_dist_reported(dist))
        code = exit_code_of(sl_dist_fail_start(dist, code == EXIT_USAGE ? SL_ERR_INVALID_ARG
                                                                         : SL_ERR_IO));
    release_errors(!sl_dist_quiet(dist));
    if (dist && code != 0 && code != EXIT_ROWS_FAILED && !sl_dist_reported(dist)) {
        fprintf(stderr, "sluice: rank %d of %d cannot go on: ending the job\n",
                sl_dist_rank(dist), sl_dist_size(dist));
        sl_dist_abort(dist, code);
    }
    sl_dist_free(dist);
    return code;
}

int main(int argc, char **argv)
{
    /* A line to stderr goes out in one write(2): unbuffered, a log line
     * was one write per character, and under mpirun (every rank's stderr
     * forwarded to one) two ranks' lines came out mixed letter by letter. */
    static char stderr_buffer[1 << 16];
    setvbuf(stderr, stderr_buffer, _IOLBF, sizeof stderr_buffer);
    report_crashes();
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        print_on_rank_0_alone();
        print_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        print_on_rank_0_alone();
        print_version();
        return 0;
    }
    if (strcmp(argv[1], "caption") == 0)
        return cmd_job(argc - 1, argv + 1, (command){"caption", NULL});
    if (strcmp(argv[1], "batch") == 0)
        return cmd_job(argc - 1, argv + 1, (command){"batch", NULL});
    if (strcmp(argv[1], "run") == 0)
        return cmd_job(argc - 1, argv + 1, (command){"run", ""});
    if (strcmp(argv[1], "config") == 0)
        return cmd_config(argc - 1, argv + 1);
    hold_errors(); /* `mpirun sluice captoin`: said once, as a wrong flag is */
    fprintf(err_out(), "sluice: unknown command '%s'; the commands are caption, batch, run and "
                       "config.\nRun 'sluice --help' for usage.\n", argv[1]);
    return run_job(NULL, NULL, EXIT_USAGE);
}
