/*-------------------------------------------------------------------------
 *
 * fuzz_buffer.c
 *	  libFuzzer target for the payload buffer readers and fixed writers
 *	  (src/buffer.c built with IMSG_BUFFER_STANDALONE).
 *
 * The input is a small program and the payload it reads:
 *
 *	 byte 0       k, the length of the program
 *	 bytes 1..k   operations, one byte each (low 3 bits: what; high 5 bits:
 *	              an argument), some taking the next 4 bytes as a length
 *	 the rest     the payload, read through a stack of readers: the outer
 *	              one over the whole payload, nested ones over a string
 *	              read from the reader below (as a message embedding a
 *	              length-prefixed sub-message)
 *
 * After every read the harness checks the reader against its own decoding
 * of the payload: a read that fits returns the right value or a pointer
 * inside the reader's bytes and advances the cursor by exactly its size; a
 * read that does not fit is reported through imsg_buffer_overrun() as a
 * read, for a size larger than what is left, with the cursor unchanged (and
 * the reader still usable).  The payload ends where libFuzzer's input ends,
 * so ASan catches any read past it; nested readers are checked by bounds.
 *
 * Everything read is written again through a fixed writer over a
 * malloc'd region of a capacity the input chooses: the bytes written must
 * equal what was read, and a write that does not fit must be reported as
 * a write, without touching memory past the capacity (ASan again).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/test/fuzz/fuzz_buffer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <setjmp.h>
#include <stdio.h>

#include "imessages.h"

/* port.h maps these to libpgport, which the target does not link */
#undef printf
#undef fprintf

int			LLVMFuzzerTestOneInput(const uint8 *data, size_t size);
void		imsg_buffer_overrun(const ImsgBuffer *buf, bool reading, uint64 wanted);

#define MAX_DEPTH 8

/* where a reader's and a writer's overrun reports jump to */
static sigjmp_buf read_jump;
static sigjmp_buf write_jump;
static struct
{
	const ImsgBuffer *buf;
	bool		reading;
	uint64		wanted;
	int			reads;			/* reports of each kind so far */
	int			writes;
}			last;

void
imsg_buffer_overrun(const ImsgBuffer *buf, bool reading, uint64 wanted)
{
	last.buf = buf;
	last.reading = reading;
	last.wanted = wanted;
	if (reading)
	{
		last.reads++;
		siglongjmp(read_jump, 1);
	}
	last.writes++;
	siglongjmp(write_jump, 1);
}

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_buffer: check failed at line %d: %s\n", \
					__LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* Big-endian integer of 'n' bytes at 'p', as the readers decode it. */
static uint64
be(const uint8 *p, int n)
{
	uint64		v = 0;
	int			i;

	for (i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

/* The writer that copies everything read, and what it must contain. */
typedef struct Copy
{
	ImsgBuffer	w;
	char	   *mem;
	uint32		capacity;
	uint8	   *expected;		/* what the writer must hold */
	uint64		expected_len;
	bool		full;			/* a write was refused: stop copying */
} Copy;

/*
 * Write 'n' bytes at 'p' (a value already in network order, or raw bytes)
 * through the writer, with 'put' doing the actual call.  Checks the result.
 */
#define COPY(copy, nbytes, bytes, put) \
	do { \
		uint32		len0_ = (copy)->w.len; \
		int			reads_ = last.reads; \
		int			before_ = last.writes; \
		if ((copy)->full) \
			break; \
		if (sigsetjmp(write_jump, 0) == 0) \
		{ \
			put; \
			CHECK(last.writes == before_ && last.reads == reads_); \
			CHECK((uint64) len0_ + (nbytes) <= (copy)->capacity); \
			CHECK((copy)->w.len == len0_ + (nbytes)); \
			memcpy((copy)->expected + (copy)->expected_len, (bytes), (nbytes)); \
			(copy)->expected_len += (nbytes); \
			CHECK(memcmp((copy)->mem, (copy)->expected, (copy)->w.len) == 0); \
		} \
		else \
		{ \
			CHECK(last.writes == before_ + 1 && last.reads == reads_); \
			CHECK(last.buf == &(copy)->w && !last.reading); \
			CHECK((uint64) len0_ + (nbytes) > (copy)->capacity); \
			CHECK((copy)->w.len <= (copy)->capacity); \
			(copy)->full = true; \
		} \
	} while (0)

int
LLVMFuzzerTestOneInput(const uint8 *data, size_t size)
{
	const uint8 *prog;
	size_t		proglen;
	const uint8 *payload;
	size_t		paylen;
	ImsgBuffer	stack[MAX_DEPTH];
	int			depth = 0;
	size_t		pc = 0;
	Copy		copy;

	if (size < 2 || size > PG_UINT32_MAX)
		return 0;
	proglen = Min((size_t) data[0], size - 2);
	prog = data + 2;
	payload = data + 2 + proglen;
	paylen = size - 2 - proglen;

	/* byte 1: the writer's capacity, as a fraction of the payload */
	copy.capacity = (uint32) (paylen * data[1] / 128);
	copy.mem = malloc(copy.capacity ? copy.capacity : 1);
	copy.expected = malloc(copy.capacity + 1);
	copy.expected_len = 0;
	copy.full = false;
	CHECK(copy.mem && copy.expected);
	ImsgBufferInitWriter(&copy.w, copy.mem, copy.capacity);

	ImsgBufferInitReader(&stack[0], payload, (uint32) paylen);
	last.reads = last.writes = 0;

	while (pc < proglen)
	{
		ImsgBuffer *r = &stack[depth];
		uint8		op = prog[pc++];
		uint32		c0 = r->cursor;
		uint32		rem0 = r->len - r->cursor;
		const uint8 *at = (const uint8 *) r->data + c0;
		uint64		want = 0;	/* bytes the read takes, if it fits */
		int			before = last.reads;
		uint32		arg = op >> 3;

		CHECK(r->cursor <= r->len);
		CHECK(ImsgBufferRemaining(r) == rem0);

		/* a length for GetBytes: small, or the next 4 program bytes */
		if ((op & 7) == 4 && arg == 31 && pc + 4 <= proglen)
		{
			arg = (uint32) be(prog + pc, 4);
			pc += 4;
		}

		if (sigsetjmp(read_jump, 0) == 0)
		{
			switch (op & 7)
			{
				case 0:
					{
						int8		v = ImsgBufferGetInt8(r);

						want = 1;
						CHECK((uint8) v == at[0]);
						COPY(&copy, 1, at, ImsgBufferPutInt8(&copy.w, v));
						break;
					}
				case 1:
					{
						int16		v = ImsgBufferGetInt16(r);

						want = 2;
						CHECK((uint16) v == be(at, 2));
						COPY(&copy, 2, at, ImsgBufferPutInt16(&copy.w, v));
						break;
					}
				case 2:
					{
						int32		v = ImsgBufferGetInt32(r);

						want = 4;
						CHECK((uint32) v == be(at, 4));
						COPY(&copy, 4, at, ImsgBufferPutInt32(&copy.w, v));
						break;
					}
				case 3:
					{
						int64		v = ImsgBufferGetInt64(r);

						want = 8;
						CHECK((uint64) v == be(at, 8));
						COPY(&copy, 8, at, ImsgBufferPutInt64(&copy.w, v));
						break;
					}
				case 4:
					{
						const char *p = ImsgBufferGetBytes(r, arg);

						want = arg;
						CHECK(p == r->data + c0);
						CHECK(arg == 0 || memcmp(p, at, arg) == 0);
						COPY(&copy, arg, at, ImsgBufferPutBytes(&copy.w, p, arg));
						break;
					}
				case 5:
				case 6:
					{
						uint32		len = 0xdeadbeef;
						const char *p = ImsgBufferGetString(r, &len);

						want = (uint64) len + 4;
						CHECK(rem0 >= 4 && len == be(at, 4));
						CHECK(p == r->data + c0 + 4);
						COPY(&copy, want, at, ImsgBufferPutString(&copy.w, p, len));
						/* 6: read on inside the string, as a nested message */
						if ((op & 7) == 6 && depth + 1 < MAX_DEPTH)
						{
							depth++;
							ImsgBufferInitReader(&stack[depth], p, len);
						}
						break;
					}
				case 7:
					/* back to the enclosing reader */
					if (depth > 0)
						depth--;
					break;
			}
			/* a read that fits: exactly its bytes, no report */
			CHECK(last.reads == before);
			CHECK(want <= rem0);
			CHECK((op & 7) == 6 && r != &stack[depth] ?
				  stack[depth - 1].cursor == c0 + want :
				  r->cursor == c0 + want);
		}
		else
		{
			/* a read that does not fit: reported, nothing consumed */
			CHECK(last.reads == before + 1);
			CHECK(last.buf == r && last.reading);
			CHECK(r->cursor == c0);
			switch (op & 7)
			{
				case 0:
					CHECK(rem0 < 1 && last.wanted == 1);
					break;
				case 1:
					CHECK(rem0 < 2 && last.wanted == 2);
					break;
				case 2:
					CHECK(rem0 < 4 && last.wanted == 4);
					break;
				case 3:
					CHECK(rem0 < 8 && last.wanted == 8);
					break;
				case 4:
					CHECK(arg > rem0 && last.wanted == arg);
					break;
				case 5:
				case 6:
					/* a short length prefix, or a length past the end */
					CHECK(rem0 < 4 ?
						  last.wanted == 4 :
						  last.wanted == be(at, 4) + 4 && last.wanted > rem0);
					break;
				default:
					CHECK(false);
			}
		}
	}
	/* the whole payload is still what the outer reader sees */
	CHECK(stack[0].data == (const char *) payload && stack[0].len == paylen);
	free(copy.mem);
	free(copy.expected);
	return 0;
}
