/*-------------------------------------------------------------------------
 *
 * test_buffer.c
 *	  Unit test of the payload buffer helpers (src/buffer.c), built outside
 *	  the server with IMSG_BUFFER_STANDALONE.  Run by t/001_buffer_unit.pl.
 *
 * Overruns are reported through imsg_buffer_overrun(), which here longjmps
 * back to the test instead of raising an ERROR.
 *
 * Copyright (c) 2026, imessages developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>
#include <stdio.h>

#include "imessages.h"

/* port.h maps these to libpgport, which this test does not link */
#undef printf
#undef fprintf

void		imsg_buffer_overrun(const ImsgBuffer *buf, bool reading, uint64 wanted);

static sigjmp_buf overrun_jump;
static int	overruns = 0;
static bool last_was_read = false;
static int	failures = 0;
static int	checks = 0;

void
imsg_buffer_overrun(const ImsgBuffer *buf, bool reading, uint64 wanted)
{
	overruns++;
	last_was_read = reading;
	siglongjmp(overrun_jump, 1);
}

#define CHECK(cond) \
	do { \
		checks++; \
		if (!(cond)) { \
			failures++; \
			fprintf(stderr, "FAILED line %d: %s\n", __LINE__, #cond); \
		} \
	} while (0)

/* Run 'stmt'; true if it reported an overrun. */
#define OVERRUNS(stmt) \
	(sigsetjmp(overrun_jump, 1) == 0 ? ((stmt), false) : true)

int
main(void)
{
	char		mem[64];
	ImsgBuffer	w;
	ImsgBuffer	r;
	uint32		len;
	const char *s;
	volatile int before;

	/* round trip of every type, network byte order on the wire */
	ImsgBufferInitWriter(&w, mem, sizeof(mem));
	ImsgBufferPutInt8(&w, -5);
	ImsgBufferPutInt16(&w, 0x1234);
	ImsgBufferPutInt32(&w, -123456789);
	ImsgBufferPutInt64(&w, INT64CONST(0x0102030405060708));
	ImsgBufferPutString(&w, "hello", 5);
	ImsgBufferPutBytes(&w, "xyz", 3);
	CHECK(w.len == 1 + 2 + 4 + 8 + 4 + 5 + 3);
	CHECK((unsigned char) mem[1] == 0x12 && (unsigned char) mem[2] == 0x34);
	CHECK(mem[7] == 0x01 && mem[14] == 0x08);

	ImsgBufferInitReader(&r, mem, w.len);
	CHECK(ImsgBufferGetInt8(&r) == -5);
	CHECK(ImsgBufferGetInt16(&r) == 0x1234);
	CHECK(ImsgBufferGetInt32(&r) == -123456789);
	CHECK(ImsgBufferGetInt64(&r) == INT64CONST(0x0102030405060708));
	s = ImsgBufferGetString(&r, &len);
	CHECK(len == 5 && memcmp(s, "hello", 5) == 0);
	CHECK(ImsgBufferRemaining(&r) == 3);
	CHECK(memcmp(ImsgBufferGetBytes(&r, 3), "xyz", 3) == 0);
	CHECK(ImsgBufferRemaining(&r) == 0);

	/* reading past the end is reported, and consumes nothing */
	before = r.cursor;
	CHECK(OVERRUNS(ImsgBufferGetInt8(&r)) && last_was_read);
	CHECK(r.cursor == (uint32) before);

	ImsgBufferInitReader(&r, mem, 3);
	CHECK(OVERRUNS(ImsgBufferGetInt32(&r)) && last_was_read);
	CHECK(OVERRUNS(ImsgBufferGetBytes(&r, 4)) && last_was_read);
	CHECK(!OVERRUNS(ImsgBufferGetBytes(&r, 3)));

	/* a length prefix longer than what is left, even a huge one */
	ImsgBufferInitWriter(&w, mem, sizeof(mem));
	ImsgBufferPutInt32(&w, 10);
	ImsgBufferPutBytes(&w, "abc", 3);
	ImsgBufferInitReader(&r, mem, w.len);
	CHECK(OVERRUNS(ImsgBufferGetString(&r, &len)) && last_was_read);
	CHECK(r.cursor == 0);

	ImsgBufferInitWriter(&w, mem, sizeof(mem));
	ImsgBufferPutInt32(&w, (int32) 0xFFFFFFFF);
	ImsgBufferInitReader(&r, mem, w.len);
	CHECK(OVERRUNS(ImsgBufferGetString(&r, &len)) && last_was_read);

	/* a fixed writer never writes past its capacity */
	memset(mem, 0x55, sizeof(mem));
	ImsgBufferInitWriter(&w, mem, 6);
	ImsgBufferPutInt32(&w, 1);
	CHECK(OVERRUNS(ImsgBufferPutInt32(&w, 2)) && !last_was_read);
	CHECK(w.len == 4 && mem[6] == 0x55 && mem[4] == 0x55);
	CHECK(OVERRUNS(ImsgBufferPutString(&w, "ab", 2)) && !last_was_read);
	CHECK(!OVERRUNS(ImsgBufferPutInt16(&w, 7)));
	CHECK(w.len == 6 && mem[6] == 0x55);

	/* an empty reader */
	ImsgBufferInitReader(&r, mem, 0);
	CHECK(OVERRUNS(ImsgBufferGetInt8(&r)));
	CHECK(!OVERRUNS(ImsgBufferGetBytes(&r, 0)));

	printf("%d checks, %d failed, %d overruns reported\n", checks, failures, overruns);
	return failures == 0 ? 0 : 1;
}
