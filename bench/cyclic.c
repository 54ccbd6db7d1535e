/*
 * The cyclic publisher of bench/cyclic.py: the load a user of udptrace traces.
 *
 *   cyclic ADDR PORT CYCLES PERIOD_US
 *
 * SCHED_FIFO 1 with its memory locked, as a cyclic publisher runs (and so with no
 * timer slack, and above the other work of a shared machine). Prints `ready pid=N`, starts on a line on stdin, then every period sleeps to an
 * absolute time (clock_nanosleep TIMER_ABSTIME) and sends one 64-byte datagram.
 * At the end: `cycles=N cpu_ns=N` (its own CPU time, CLOCK_PROCESS_CPUTIME_ID:
 * exact, where /proc's utime and stime count in ticks), then one line with each
 * cycle's wake-up lateness in ns (woken minus asked for).
 */
#include <arpa/inet.h>
#include <sched.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long ns(const struct timespec *t)
{
	return t->tv_sec * 1000000000LL + t->tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s ADDR PORT CYCLES PERIOD_US\n", argv[0]);
		return 2;
	}
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	int cycles = atoi(argv[3]);
	long period_ns = atol(argv[4]) * 1000L;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	long long *late = calloc(cycles > 0 ? cycles : 1, sizeof(*late));
	static char payload[64] = "cyclic";
	struct timespec next, now, cpu0, cpu1;
	char go[8];

	if (fd < 0 || !late || cycles <= 0 || period_ns <= 0 ||
	    inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
		fprintf(stderr, "cyclic: bad arguments or no socket\n");
		return 1;
	}
	struct sched_param rt = {.sched_priority = 1};
	if (sched_setscheduler(0, SCHED_FIFO, &rt) || mlockall(MCL_CURRENT | MCL_FUTURE)) {
		perror("cyclic: SCHED_FIFO, mlockall");
		return 1;
	}
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	if (!fgets(go, sizeof(go), stdin))
		return 1;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu0);
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (int i = 0; i < cycles; i++) {
		next.tv_nsec += period_ns;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
		clock_gettime(CLOCK_MONOTONIC, &now);
		late[i] = ns(&now) - ns(&next);
		sendto(fd, payload, sizeof(payload), 0, (const struct sockaddr *)&to, sizeof(to));
	}
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu1);
	printf("cycles=%d cpu_ns=%lld\n", cycles, ns(&cpu1) - ns(&cpu0));
	for (int i = 0; i < cycles; i++)
		printf("%lld%c", late[i], i + 1 < cycles ? ' ' : '\n');
	return 0;
}
