// SPDX-License-Identifier: MIT
/*
 * udp_flood: the benchmark's load. One sendto() per datagram, as fast as the
 * kernel takes them, so every traced hook fires once per packet and nothing
 * else in the process costs time.
 *
 *   udp_flood -d ADDR -p PORT [-s BYTES] [-n COUNT] [-t SECONDS] [-T THREADS] [-w]
 *       send; -w waits for a line on stdin first, so a tracer can attach to
 *       this pid before the first packet. -T sends from THREADS threads at
 *       once, each with its own socket and COUNT/THREADS datagrams, placed by
 *       the scheduler (on every CPU the process may use). Prints one line at
 *       the end, for the whole process:
 *       sent=N errors=N elapsed_ns=N utime_ns=N stime_ns=N
 *   udp_flood -l PORT [-t SECONDS]
 *       receive and discard until SIGTERM or SECONDS; prints received=N. It
 *       polls without sleeping: a receiver that sleeps makes the sender's CPU
 *       pay for its wake-ups, more the more often it is idle, so a tracer that
 *       slows the receiver would seem to cost the sender less.
 *
 * Both stop by themselves: the sender after COUNT datagrams or SECONDS,
 * whichever comes first, the receiver after SECONDS.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHECK_EVERY 1024 /* clock reads per datagram would show up in the rate */
#define RECV_BATCH 64
#define MAX_THREADS 64

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t tv_ns(struct timeval tv)
{
	return (uint64_t)tv.tv_sec * 1000000000ull + (uint64_t)tv.tv_usec * 1000ull;
}

static void usage(void)
{
	fprintf(stderr, "usage: udp_flood -d ADDR -p PORT [-s BYTES] [-n COUNT] [-t SECONDS] "
			"[-T THREADS] [-w]\n"
			"       udp_flood -l PORT [-t SECONDS]\n");
	exit(2);
}

struct sender {
	pthread_t thread;
	int fd;
	const struct sockaddr_in *to;
	const char *payload;
	size_t size;
	uint64_t count, deadline, sent, errors;
};

static void *send_loop(void *arg)
{
	struct sender *s = arg;

	while (s->sent + s->errors < s->count && !stopping) {
		if (sendto(s->fd, s->payload, s->size, 0, (const struct sockaddr *)s->to,
			   sizeof(*s->to)) < 0)
			s->errors++;
		else
			s->sent++;
		if ((s->sent + s->errors) % CHECK_EVERY == 0 && now_ns() >= s->deadline)
			break;
	}
	return NULL;
}

static int flood(const char *addr, int port, size_t size, uint64_t count, double seconds,
		 int threads, int wait_stdin)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct sender senders[MAX_THREADS] = {0};
	struct rusage before, after;
	uint64_t sent = 0, errors = 0, start, end;
	char *payload, line[64];

	if (inet_pton(AF_INET, addr, &to.sin_addr) != 1) {
		fprintf(stderr, "udp_flood: '%s' is not an IPv4 address\n", addr);
		return 2;
	}
	payload = calloc(1, size ? size : 1);
	if (!payload)
		return 1;
	for (int i = 0; i < threads; i++) {
		senders[i] = (struct sender){.to = &to, .payload = payload, .size = size,
					     .count = count / threads + (i < (int)(count % threads))};
		senders[i].fd = socket(AF_INET, SOCK_DGRAM, 0);
		if (senders[i].fd < 0) {
			perror("udp_flood: socket");
			return 1;
		}
	}
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	if (wait_stdin && !fgets(line, sizeof(line), stdin))
		return 1;

	getrusage(RUSAGE_SELF, &before);
	start = now_ns();
	for (int i = 0; i < threads; i++)
		senders[i].deadline = start + (uint64_t)(seconds * 1e9);
	if (threads == 1) {
		send_loop(&senders[0]);
	} else {
		for (int i = 0; i < threads; i++)
			if (pthread_create(&senders[i].thread, NULL, send_loop, &senders[i])) {
				fprintf(stderr, "udp_flood: cannot start thread %d\n", i);
				return 1;
			}
		for (int i = 0; i < threads; i++)
			pthread_join(senders[i].thread, NULL);
	}
	end = now_ns();
	getrusage(RUSAGE_SELF, &after);
	for (int i = 0; i < threads; i++) {
		sent += senders[i].sent;
		errors += senders[i].errors;
	}
	printf("sent=%llu errors=%llu elapsed_ns=%llu utime_ns=%llu stime_ns=%llu\n",
	       (unsigned long long)sent, (unsigned long long)errors,
	       (unsigned long long)(end - start),
	       (unsigned long long)(tv_ns(after.ru_utime) - tv_ns(before.ru_utime)),
	       (unsigned long long)(tv_ns(after.ru_stime) - tv_ns(before.ru_stime)));
	return 0;
}

static int drain(int port, double seconds)
{
	struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons(port)};
	static char bufs[RECV_BATCH][2048];
	struct mmsghdr msgs[RECV_BATCH];
	struct iovec iov[RECV_BATCH];
	uint64_t received = 0, deadline;
	int fd, big = 8 << 20, n;

	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&at, sizeof(at)) < 0) {
		perror("udp_flood: bind");
		return 1;
	}
	/* a deep queue absorbs the sender's bursts while this process waits for its CPU */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
	for (int i = 0; i < RECV_BATCH; i++) {
		iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = sizeof(bufs[i])};
		msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
	}
	printf("listening port=%d\n", port);
	fflush(stdout);
	deadline = now_ns() + (uint64_t)(seconds * 1e9);
	for (uint64_t polls = 0; !stopping; polls++) {
		n = recvmmsg(fd, msgs, RECV_BATCH, MSG_DONTWAIT, NULL);
		if (n > 0)
			received += n;
		else if (errno != EAGAIN && errno != EINTR)
			break;
		if (polls % CHECK_EVERY == 0 && now_ns() >= deadline)
			break;
	}
	printf("received=%llu\n", (unsigned long long)received);
	return 0;
}

int main(int argc, char **argv)
{
	const char *addr = NULL;
	uint64_t count = UINT64_MAX;
	double seconds = 10;
	int port = 0, listen_port = 0, wait_stdin = 0, threads = 1, opt;
	size_t size = 64;
	struct sigaction sa = {.sa_handler = on_signal};

	while ((opt = getopt(argc, argv, "d:p:s:n:t:T:l:w")) != -1) {
		switch (opt) {
		case 'd': addr = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 's': size = strtoul(optarg, NULL, 0); break;
		case 'n': count = strtoull(optarg, NULL, 0); break;
		case 't': seconds = atof(optarg); break;
		case 'T': threads = atoi(optarg); break;
		case 'l': listen_port = atoi(optarg); break;
		case 'w': wait_stdin = 1; break;
		default: usage();
		}
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (listen_port > 0)
		return drain(listen_port, seconds);
	if (!addr || port <= 0 || port > 65535 || threads < 1 || threads > MAX_THREADS)
		usage();
	return flood(addr, port, size, count, seconds, threads, wait_stdin);
}
