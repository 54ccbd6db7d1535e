/*
 * A cyclic UDP publisher for the tests: every period it wakes at an absolute
 * time and calls publish_cb(), which sends the cycle's datagrams.
 *
 *   cyclic_publisher ADDR PORT CYCLES PERIOD_US [SKIP DOUBLE OUTSIDE] [-r]
 *
 * SKIP: a cycle that publishes nothing (a missed period); DOUBLE: a cycle whose
 * callback sends twice; OUTSIDE: a cycle that also sends once outside the
 * callback. -1 (the default) for none. It starts when a line arrives on stdin,
 * so a test can attach its tracer first, and at the end prints the
 * CLOCK_MONOTONIC time of every callback entry: the ground truth a test
 * compares the tracer with.
 *
 * -r: a cycle that ends after its successor's time skips the periods it
 * overran, as a real-time loop does, instead of running them back to back
 * (whose wake-ups would then all be "late" by the overrun, not by the kernel).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char payload[64] = "cyclic";

__attribute__((noinline)) void publish_cb(int fd, const struct sockaddr_in *to, int sends)
{
	for (int i = 0; i < sends; i++)
		sendto(fd, payload, sizeof(payload), 0, (const struct sockaddr *)to, sizeof(*to));
	__asm__ volatile("" ::: "memory"); /* keep the call a call */
}

int main(int argc, char **argv)
{
	int resync = argc > 1 && strcmp(argv[argc - 1], "-r") == 0;

	argc -= resync;
	if (argc < 5) {
		fprintf(stderr, "usage: %s ADDR PORT CYCLES PERIOD_US [SKIP DOUBLE OUTSIDE] [-r]\n", argv[0]);
		return 2;
	}
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	int cycles = atoi(argv[3]);
	long period_ns = atol(argv[4]) * 1000L;
	int skip = argc > 5 ? atoi(argv[5]) : -1;
	int twice = argc > 6 ? atoi(argv[6]) : -1;
	int outside = argc > 7 ? atoi(argv[7]) : -1;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct timespec next;

	if (fd < 0 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
		perror("cyclic_publisher");
		return 1;
	}
	char go[8];
	long long *entries = calloc(cycles > 0 ? cycles : 1, sizeof(*entries));
	int called = 0;

	if (!fgets(go, sizeof(go), stdin))
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (int cycle = 0; cycle < cycles; cycle++) {
		next.tv_nsec += period_ns;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
		if (cycle == skip)
			continue;
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		entries[called++] = now.tv_sec * 1000000000LL + now.tv_nsec;
		publish_cb(fd, &to, cycle == twice ? 2 : 1);
		if (cycle == outside)
			sendto(fd, payload, sizeof(payload), 0, (const struct sockaddr *)&to, sizeof(to));
		if (resync) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			long long late = (now.tv_sec - next.tv_sec) * 1000000000LL
					 + now.tv_nsec - next.tv_nsec;
			long long skipped = late > 0 ? late / period_ns * period_ns : 0;

			next.tv_sec += skipped / 1000000000LL;
			next.tv_nsec += skipped % 1000000000LL;
			while (next.tv_nsec >= 1000000000L) {
				next.tv_nsec -= 1000000000L;
				next.tv_sec++;
			}
		}
	}
	close(fd);
	for (int i = 0; i < called; i++)
		printf("%lld\n", entries[i]);
	free(entries);
	return 0;
}
