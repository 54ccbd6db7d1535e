/*
 * A periodic UDP sender for the tests of launch times and kernel TX timestamps.
 *
 *   timed_sender ADDR PORT COUNT PERIOD_US [-t OFFSET_US] [-l LATE] [-s]
 *
 * -t: every datagram carries an SO_TXTIME launch time (CLOCK_TAI) OFFSET_US after
 *     it is sent; -l LATE: datagram number LATE gets one already 1 ms past instead.
 * -s: SO_TIMESTAMPING software TX timestamps, read back from the error queue.
 * It starts when a line arrives on stdin (so a tracer can attach first), and at
 * the end prints one line per datagram: its index, its launch time (CLOCK_TAI ns,
 * 0: none) and the kernel's software TX timestamp (CLOCK_REALTIME ns, 0: none).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_TXTIME
#define SO_TXTIME 61
#define SCM_TXTIME SO_TXTIME
#endif

static int64_t now_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Every timestamp waiting on the error queue, by its OPT_ID key (the datagram's index). */
static void read_stamps(int fd, int64_t *stamps, int count, int wait_ms)
{
	char control[512];
	char data[256];

	for (;;) {
		struct pollfd p = {.fd = fd, .events = 0};
		struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
				     .msg_controllen = sizeof(control)};
		struct scm_timestamping *ts = NULL;
		struct sock_extended_err *err = NULL;

		if (poll(&p, 1, wait_ms) <= 0 || !(p.revents & POLLERR))
			return;
		if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
			return;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPING)
				ts = (struct scm_timestamping *)CMSG_DATA(c);
			else if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR)
				err = (struct sock_extended_err *)CMSG_DATA(c);
		}
		if (ts && err && err->ee_origin == SO_EE_ORIGIN_TIMESTAMPING &&
		    err->ee_info == SCM_TSTAMP_SND && err->ee_data < (uint32_t)count)
			stamps[err->ee_data] = ts->ts[0].tv_sec * 1000000000LL + ts->ts[0].tv_nsec;
	}
}

int main(int argc, char **argv)
{
	long offset_us = -1;
	int late = -1, stamping = 0, opt;

	while ((opt = getopt(argc, argv, "t:l:s")) != -1) {
		if (opt == 't')
			offset_us = atol(optarg);
		else if (opt == 'l')
			late = atoi(optarg);
		else if (opt == 's')
			stamping = 1;
		else
			return 2;
	}
	if (argc - optind != 4) {
		fprintf(stderr, "usage: %s ADDR PORT COUNT PERIOD_US [-t OFFSET_US] [-l LATE] [-s]\n",
			argv[0]);
		return 2;
	}
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[optind + 1]))};
	int count = atoi(argv[optind + 2]);
	long period_ns = atol(argv[optind + 3]) * 1000L;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int64_t *launch = calloc(count, sizeof(*launch));
	int64_t *stamps = calloc(count, sizeof(*stamps));
	char payload[64] = "timed", go[8];

	if (fd < 0 || inet_pton(AF_INET, argv[optind], &to.sin_addr) != 1 || !launch || !stamps) {
		perror("timed_sender");
		return 1;
	}
	if (offset_us >= 0) {
		struct sock_txtime txtime = {.clockid = CLOCK_TAI};

		if (setsockopt(fd, SOL_SOCKET, SO_TXTIME, &txtime, sizeof(txtime))) {
			perror("SO_TXTIME");
			return 1;
		}
	}
	if (stamping) {
		int flags = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
			    SOF_TIMESTAMPING_OPT_ID;

		if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof(flags))) {
			perror("SO_TIMESTAMPING");
			return 1;
		}
	}
	if (!fgets(go, sizeof(go), stdin))
		return 1;
	int64_t start = now_ns(CLOCK_MONOTONIC);

	for (int i = 0; i < count; i++) {
		int64_t at = start + (i + 1) * period_ns;
		struct timespec next = {.tv_sec = at / 1000000000LL, .tv_nsec = at % 1000000000LL};
		char control[CMSG_SPACE(sizeof(uint64_t))] = {0};
		struct iovec iov = {.iov_base = payload, .iov_len = sizeof(payload)};
		struct msghdr msg = {.msg_name = &to, .msg_namelen = sizeof(to), .msg_iov = &iov,
				     .msg_iovlen = 1};

		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
		if (offset_us >= 0) {
			struct cmsghdr *c;

			launch[i] = now_ns(CLOCK_TAI) + (i == late ? -1000000LL : offset_us * 1000LL);
			msg.msg_control = control;
			msg.msg_controllen = sizeof(control);
			c = CMSG_FIRSTHDR(&msg);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_TXTIME;
			c->cmsg_len = CMSG_LEN(sizeof(uint64_t));
			memcpy(CMSG_DATA(c), &launch[i], sizeof(uint64_t));
		}
		if (sendmsg(fd, &msg, 0) < 0)
			fprintf(stderr, "datagram %d: %s\n", i, strerror(errno));
		if (stamping)
			read_stamps(fd, stamps, count, 0);
	}
	if (stamping)
		read_stamps(fd, stamps, count, 200);
	close(fd);
	for (int i = 0; i < count; i++)
		printf("%d %lld %lld\n", i, (long long)launch[i], (long long)stamps[i]);
	return 0;
}
