/*
 * numa-migrate FROM TO NR_PAGES: fault NR_PAGES anonymous pages in on node FROM, move
 * them to node TO with migrate_pages(2) on this process, and say on which node each page
 * was before and after (move_pages(2) with no target nodes reports a page's node, or a
 * negative errno). The guest has no libnuma (numactl's migratepages): raw system calls,
 * so that a static build runs in any guest.
 *
 * Prints, one line each:
 *   before node0=4096          (pages per node; err=N for pages without one)
 *   migrate_pages 0            (its return: pages it could not move, or -1 and errno)
 *   after node1=4096
 * Exit status: 0 when migrate_pages(2) moved everything it was asked to, 1 when it left
 * pages behind, 2 when a system call failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* include/uapi/linux/mempolicy.h */
#define MPOL_DEFAULT 0
#define MPOL_BIND 2
#define MAX_NODES 64

static int report(const char *when, void **pages, int *status, unsigned long count)
{
	unsigned long per_node[MAX_NODES] = { 0 }, errors = 0;

	if (syscall(SYS_move_pages, 0, count, pages, NULL, status, 0) != 0) {
		fprintf(stderr, "move_pages (query): %s\n", strerror(errno));
		return -1;
	}
	for (unsigned long i = 0; i < count; i++) {
		if (status[i] >= 0 && status[i] < MAX_NODES)
			per_node[status[i]]++;
		else
			errors++;
	}
	printf("%s", when);
	for (int node = 0; node < MAX_NODES; node++)
		if (per_node[node])
			printf(" node%d=%lu", node, per_node[node]);
	if (errors)
		printf(" err=%lu", errors);
	printf("\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: numa-migrate FROM TO NR_PAGES\n");
		return 2;
	}
	int from = atoi(argv[1]), to = atoi(argv[2]);
	unsigned long count = strtoul(argv[3], NULL, 10);
	long page = sysconf(_SC_PAGESIZE);
	if (from < 0 || from >= MAX_NODES || to < 0 || to >= MAX_NODES || !count)
		return 2;
	size_t size = count * page;
	char *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void **pages = calloc(count, sizeof(*pages));
	int *status = calloc(count, sizeof(*status));
	if (buf == MAP_FAILED || !pages || !status) {
		perror("allocating");
		return 2;
	}
	/* Bind the range to FROM for the faults, then give it back the default policy
	 * (which moves nothing): what moves the pages below is migrate_pages(2) alone. */
	unsigned long old_nodes = 1UL << from, new_nodes = 1UL << to;
	if (syscall(SYS_mbind, buf, size, MPOL_BIND, &old_nodes, MAX_NODES + 1, 0) != 0) {
		perror("mbind MPOL_BIND");
		return 2;
	}
	memset(buf, 0x5a, size);
	if (syscall(SYS_mbind, buf, size, MPOL_DEFAULT, NULL, 0, 0) != 0) {
		perror("mbind MPOL_DEFAULT");
		return 2;
	}
	for (unsigned long i = 0; i < count; i++)
		pages[i] = buf + i * page;
	if (report("before", pages, status, count))
		return 2;
	/* maxnode: get_nodes() in mm/mempolicy.c reads maxnode - 1 bits. */
	long left = syscall(SYS_migrate_pages, 0, MAX_NODES + 1, &old_nodes, &new_nodes);
	if (left < 0) {
		printf("migrate_pages -1 %s\n", strerror(errno));
		return 2;
	}
	printf("migrate_pages %ld\n", left);
	if (report("after", pages, status, count))
		return 2;
	for (unsigned long i = 0; i < size; i += page)
		if (buf[i] != 0x5a) {
			fprintf(stderr, "page %lu lost its contents in the move\n", i / page);
			return 2;
		}
	return left ? 1 : 0;
}
