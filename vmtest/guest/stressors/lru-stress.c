/*
 * lru-stress: keep pages flowing through every per-CPU LRU batch of Linux 6.1/6.12
 * (struct cpu_fbatches in mm/swap.c, and mlock's batch in mm/mlock.c), and leave the
 * batches partly filled between bursts, so that a page migration running meanwhile
 * meets pages that a batch holds a reference to. That is the situation
 * d479960e44f2 ("mm: disable LRU pagevec during the migration temporarily") is about.
 *
 * Operations (each selectable; -o add,activate,...):
 *   add        new anonymous pages (page fault -> folio_add_lru -> lru_add batch)
 *   file       new page-cache pages of a tmpfs file (write -> lru_add batch)
 *   activate   re-read cached, inactive file pages (mark_page_accessed -> activate batch)
 *   deactivate MADV_COLD on mapped anonymous pages (lru_deactivate batch)
 *   lazyfree   MADV_FREE on anonymous pages (lru_lazyfree batch)
 *   invalidate POSIX_FADV_DONTNEED on dirty file pages (lru_deactivate_file batch)
 *   mlock      mlock + munlock (mlock batch)
 * The lru_rotate batch needs writeback of reclaimable pages to a block device; the
 * guest has none, so it is not exercised (said in --help too).
 *
 * Each worker is pinned to one CPU and repeats: pick an operation, apply it to a burst
 * of 1..B random pages (B <= 14 keeps a 15-entry batch partly filled), then pause
 * 0..P microseconds. Deterministic for a given --seed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_FREE
#define MADV_FREE 8
#endif

enum op { OP_ADD, OP_FILE, OP_ACTIVATE, OP_DEACTIVATE, OP_LAZYFREE, OP_INVALIDATE, OP_MLOCK,
	  OP_COUNT };
static const char *op_names[OP_COUNT] = { "add", "file", "activate", "deactivate",
					  "lazyfree", "invalidate", "mlock" };

struct opts {
	int workers;
	unsigned ops_mask;
	size_t anon_pages, file_pages;
	int burst_max;
	int pause_us_max;
	double duration_s;
	int refault_ms;
	unsigned long seed;
	const char *dir;
};

static volatile sig_atomic_t stop, refault_now;
static void on_signal(int sig) { (void)sig; stop = 1; }
static void on_refault(int sig) { (void)sig; refault_now = 1; }

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: small, deterministic, good enough for choosing pages */
	*s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "lru-stress: %s: %s\n", what, strerror(errno));
	exit(2);
}

static int worker(int id, const struct opts *o)
{
	long page = sysconf(_SC_PAGESIZE);
	uint64_t rng = o->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)id + 1;
	unsigned long counts[OP_COUNT] = {0};
	unsigned long refaults = 0;
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t set;
	char path[256];
	int fd;
	char *anon, *file_map, *buf;
	double end;

	CPU_ZERO(&set);
	CPU_SET(id % ncpu, &set);
	sched_setaffinity(0, sizeof(set), &set);

	anon = mmap(NULL, o->anon_pages * page, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED)
		die("mmap anon");
	snprintf(path, sizeof(path), "%s/lru-stress.%d.%d", o->dir, (int)getppid(), id);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		die(path);
	unlink(path);
	if (ftruncate(fd, (off_t)o->file_pages * page))
		die("ftruncate");
	file_map = mmap(NULL, o->file_pages * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (file_map == MAP_FAILED)
		die("mmap file");
	buf = malloc(page);
	memset(buf, 0x5a, page);
	/* populate: every page exists once, so later ops find resident pages */
	for (size_t i = 0; i < o->anon_pages; i++)
		anon[i * page] = 1;
	for (size_t i = 0; i < o->file_pages; i++)
		if (pwrite(fd, buf, page, (off_t)i * page) != page)
			die("pwrite");

	end = now_s() + o->duration_s;
	double next_refault = o->refault_ms > 0 ? now_s() + o->refault_ms / 1e3 : 0;
	while (!stop && (o->duration_s <= 0 || now_s() < end)) {
		/*
		 * Refault: give the whole working set new physical pages, the way an app
		 * launch does. Fresh movable pages land in CMA when it holds most of the free
		 * memory (mm/page_alloc.c __rmqueue()), so the pages a CMA allocation must
		 * migrate keep being the ones this load is batching.
		 */
		if ((next_refault && now_s() >= next_refault) || refault_now) {
			refault_now = 0;
			/*
			 * New pages first, old ones dropped after: freed pages would be reused
			 * at once from the per-CPU free lists; new ones come from the buddy
			 * allocator, which prefers CMA here.
			 */
			char *fresh = mmap(NULL, o->anon_pages * page, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			int nfd;

			if (fresh == MAP_FAILED)
				die("mmap anon");
			for (size_t i = 0; i < o->anon_pages; i++)
				fresh[i * page] = 2;
			munmap(anon, o->anon_pages * page);
			anon = fresh;
			snprintf(path, sizeof(path), "%s/lru-stress.%d.%d.%lu", o->dir,
				 (int)getppid(), id, refaults);
			nfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
			if (nfd < 0)
				die(path);
			unlink(path);
			for (size_t i = 0; i < o->file_pages; i++)
				if (pwrite(nfd, buf, page, (off_t)i * page) != page)
					die("pwrite");
			munmap(file_map, o->file_pages * page);
			close(fd);
			fd = nfd;
			file_map = mmap(NULL, o->file_pages * page, PROT_READ | PROT_WRITE,
					MAP_SHARED, fd, 0);
			if (file_map == MAP_FAILED)
				die("mmap file");
			refaults++;
			if (next_refault)
				next_refault = now_s() + o->refault_ms / 1e3;
		}
		enum op op;
		int burst = 1 + (int)(rng_next(&rng) % (uint64_t)o->burst_max);

		do {
			op = (enum op)(rng_next(&rng) % OP_COUNT);
		} while (!(o->ops_mask & (1u << op)));

		for (int b = 0; b < burst; b++) {
			size_t a = rng_next(&rng) % o->anon_pages;
			size_t f = rng_next(&rng) % o->file_pages;
			char *ap = anon + a * page;
			volatile char sink;

			switch (op) {
			case OP_ADD:	/* drop the page and fault a fresh one in */
				madvise(ap, page, MADV_DONTNEED);
				ap[0] = (char)b;
				break;
			case OP_FILE:	/* new page cache page: punch then rewrite */
				fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					  (off_t)f * page, page);
				if (pwrite(fd, buf, page, (off_t)f * page) != page)
					die("pwrite");
				break;
			case OP_ACTIVATE: /* second access of a cached page */
				if (pread(fd, buf, page, (off_t)f * page) != page ||
				    pread(fd, buf, page, (off_t)f * page) != page)
					die("pread");
				break;
			case OP_DEACTIVATE:
				ap[0] = (char)b;
				madvise(ap, page, MADV_COLD);
				break;
			case OP_LAZYFREE:
				ap[0] = (char)b;
				madvise(ap, page, MADV_FREE);
				break;
			case OP_INVALIDATE: /* dirty mapped page cannot be dropped: deactivated */
				file_map[f * page] = (char)b;
				posix_fadvise(fd, (off_t)f * page, page, POSIX_FADV_DONTNEED);
				break;
			case OP_MLOCK:
				sink = ap[0];
				(void)sink;
				if (mlock(ap, page) == 0)
					munlock(ap, page);
				break;
			default:
				break;
			}
			counts[op]++;
		}
		if (o->pause_us_max > 0)
			usleep((useconds_t)(rng_next(&rng) % (uint64_t)(o->pause_us_max + 1)));
	}
	printf("worker=%d cpu=%d refaults=%lu", id, id % ncpu, refaults);
	for (int i = 0; i < OP_COUNT; i++)
		if (o->ops_mask & (1u << i))
			printf(" %s=%lu", op_names[i], counts[i]);
	printf("\n");
	fflush(stdout);
	return 0;
}

static unsigned parse_ops(const char *list)
{
	unsigned mask = 0;
	char *copy = strdup(list), *save = NULL;

	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int found = 0;
		if (!strcmp(tok, "all")) {
			mask = (1u << OP_COUNT) - 1;
			continue;
		}
		for (int i = 0; i < OP_COUNT; i++)
			if (!strcmp(tok, op_names[i])) {
				mask |= 1u << i;
				found = 1;
			}
		if (!found) {
			fprintf(stderr, "lru-stress: unknown operation '%s'; available: all", tok);
			for (int i = 0; i < OP_COUNT; i++)
				fprintf(stderr, ", %s", op_names[i]);
			fprintf(stderr, "\n");
			exit(2);
		}
	}
	free(copy);
	return mask;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: lru-stress [-w WORKERS] [-o OPS] [-a ANON_MIB] [-f FILE_MIB] [-b BURST]\n"
		"                  [-p PAUSE_US] [-t SECONDS] [-s SEED] [-d TMPFS_DIR]\n"
		"                  [-r REFAULT_MS]\n"
		"  OPS: comma list of all, add, file, activate, deactivate, lazyfree,\n"
		"       invalidate, mlock (lru_rotate needs block-device writeback: not covered)\n"
		"  defaults: one worker per CPU, all ops, 16 MiB anon + 16 MiB file per worker,\n"
		"            bursts of 1..14 pages, pauses of 0..20000 us, run until SIGTERM,\n"
		"            no refault (-r: re-fault the whole working set every N ms;\n"
		"            SIGUSR1: re-fault once, now)\n");
}

int main(int argc, char **argv)
{
	struct opts o = { .workers = (int)sysconf(_SC_NPROCESSORS_ONLN),
			  .ops_mask = (1u << OP_COUNT) - 1, .anon_pages = 16 << 8,
			  .file_pages = 16 << 8, .burst_max = 14, .pause_us_max = 20000,
			  .duration_s = 0, .seed = 1, .dir = "/dev/shm" };
	int c, status, rc = 0;

	while ((c = getopt(argc, argv, "w:o:a:f:b:p:t:s:d:r:h")) != -1) {
		switch (c) {
		case 'w': o.workers = atoi(optarg); break;
		case 'o': o.ops_mask = parse_ops(optarg); break;
		case 'a': o.anon_pages = (size_t)atol(optarg) << 8; break;
		case 'f': o.file_pages = (size_t)atol(optarg) << 8; break;
		case 'b': o.burst_max = atoi(optarg); break;
		case 'p': o.pause_us_max = atoi(optarg); break;
		case 't': o.duration_s = atof(optarg); break;
		case 's': o.seed = strtoul(optarg, NULL, 0); break;
		case 'd': o.dir = optarg; break;
		case 'r': o.refault_ms = atoi(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (o.workers < 1 || o.burst_max < 1 || o.pause_us_max < 0 || !o.anon_pages ||
	    !o.file_pages || !o.ops_mask) {
		usage(stderr);
		return 2;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGUSR1, on_refault);	/* workers inherit it; the parent only waits */
	for (int i = 0; i < o.workers; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			signal(SIGTERM, on_signal);
			_exit(worker(i, &o));
		}
	}
	while (wait(&status) > 0)
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			rc = 1;
	return rc;
}
