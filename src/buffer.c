/*-------------------------------------------------------------------------
 *
 * buffer.c
 *	  Bounds-checked serialization of message payloads.
 *
 * pqformat.c's pq_send* functions write into a palloc'd StringInfo, and its
 * pq_getmsg* readers report PROTOCOL_VIOLATION, a client-protocol error.
 * Messages are built in place in shared memory, in a region of fixed size,
 * and read from there, so imessages has its own small set, in the same
 * style: integers in network byte order, strings as a uint32 length and
 * raw bytes (no encoding conversion: payloads may cross nodes).
 *
 * Every overrun goes through imsg_buffer_overrun(), the one place that
 * reports errors, so that this file can be built outside the server (the
 * fuzz targets define IMSG_BUFFER_STANDALONE and supply their own).
 *
 * Copyright (c) 2026, imessages developers
 *
 * IDENTIFICATION
 *	  src/buffer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/pg_bswap.h"
#include "utils/memutils.h"

#include "imessages.h"

#ifndef IMSG_BUFFER_STANDALONE
/*
 * Report an overrun.  'reading' tells a short payload (a malformed message:
 * 22P03) from a writer out of room (a programming limit: 54000).
 */
static void
imsg_buffer_overrun(const ImsgBuffer *buf, bool reading, uint64 wanted)
{
	if (reading)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("imessages payload is too short"),
				 errdetail("Reading %llu bytes at offset %u of a %u-byte payload.",
						   (unsigned long long) wanted, buf->cursor, buf->len)));
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("imessages buffer is full"),
			 errdetail("Writing %llu bytes after %u of %u bytes.",
					   (unsigned long long) wanted, buf->len,
					   buf->max_capacity ? buf->max_capacity : buf->capacity)));
}
#else
extern void imsg_buffer_overrun(const ImsgBuffer *buf, bool reading, uint64 wanted);
#endif

void
ImsgBufferInitWriter(ImsgBuffer *buf, void *data, uint32 capacity)
{
	memset(buf, 0, sizeof(ImsgBuffer));
	buf->data = data;
	buf->capacity = capacity;
}

#ifndef IMSG_BUFFER_STANDALONE
/*
 * A writer in CurrentMemoryContext that grows as needed, up to
 * max_capacity bytes (at most MaxAllocSize).
 */
void
ImsgBufferInitGrowable(ImsgBuffer *buf, uint32 initial, uint32 max_capacity)
{
	memset(buf, 0, sizeof(ImsgBuffer));
	max_capacity = Min(max_capacity, MaxAllocSize);
	initial = Max(Min(initial, max_capacity), 64);
	buf->data = palloc(initial);
	buf->capacity = initial;
	buf->max_capacity = max_capacity;
	buf->context = CurrentMemoryContext;
}
#endif

void
ImsgBufferInitReader(ImsgBuffer *buf, const void *data, uint32 len)
{
	memset(buf, 0, sizeof(ImsgBuffer));
	buf->data = (char *) data;
	buf->len = len;
}

/* Make room for 'n' more bytes or report an overrun. */
static inline char *
imsg_buffer_reserve(ImsgBuffer *buf, uint64 n)
{
	char	   *p;

	if ((uint64) buf->len + n > buf->capacity)
	{
#ifndef IMSG_BUFFER_STANDALONE
		if (buf->context != NULL && (uint64) buf->len + n <= buf->max_capacity)
		{
			uint64		newcap = Max((uint64) buf->capacity * 2, buf->len + n);

			newcap = Min(newcap, buf->max_capacity);
			p = MemoryContextAllocHuge(buf->context, newcap);
			memcpy(p, buf->data, buf->len);
			pfree(buf->data);
			buf->data = p;
			buf->capacity = newcap;
		}
		else
#endif
			imsg_buffer_overrun(buf, false, n);
	}
	p = buf->data + buf->len;
	buf->len += n;
	return p;
}

void
ImsgBufferPutInt8(ImsgBuffer *buf, int8 value)
{
	*imsg_buffer_reserve(buf, 1) = (char) value;
}

void
ImsgBufferPutInt16(ImsgBuffer *buf, int16 value)
{
	uint16		n = pg_hton16((uint16) value);

	memcpy(imsg_buffer_reserve(buf, 2), &n, 2);
}

void
ImsgBufferPutInt32(ImsgBuffer *buf, int32 value)
{
	uint32		n = pg_hton32((uint32) value);

	memcpy(imsg_buffer_reserve(buf, 4), &n, 4);
}

void
ImsgBufferPutInt64(ImsgBuffer *buf, int64 value)
{
	uint64		n = pg_hton64((uint64) value);

	memcpy(imsg_buffer_reserve(buf, 8), &n, 8);
}

void
ImsgBufferPutBytes(ImsgBuffer *buf, const void *data, uint32 len)
{
	if (len > 0)
		memcpy(imsg_buffer_reserve(buf, len), data, len);
}

/* A uint32 length, then the bytes, no terminator. */
void
ImsgBufferPutString(ImsgBuffer *buf, const char *str, uint32 len)
{
	ImsgBufferPutInt32(buf, (int32) len);
	ImsgBufferPutBytes(buf, str, len);
}

/* Consume 'n' bytes or report a short payload. */
static inline const char *
imsg_buffer_take(ImsgBuffer *buf, uint64 n)
{
	const char *p;

	if (n > (uint64) (buf->len - buf->cursor))
		imsg_buffer_overrun(buf, true, n);
	p = buf->data + buf->cursor;
	buf->cursor += n;
	return p;
}

int8
ImsgBufferGetInt8(ImsgBuffer *buf)
{
	return (int8) *imsg_buffer_take(buf, 1);
}

int16
ImsgBufferGetInt16(ImsgBuffer *buf)
{
	uint16		n;

	memcpy(&n, imsg_buffer_take(buf, 2), 2);
	return (int16) pg_ntoh16(n);
}

int32
ImsgBufferGetInt32(ImsgBuffer *buf)
{
	uint32		n;

	memcpy(&n, imsg_buffer_take(buf, 4), 4);
	return (int32) pg_ntoh32(n);
}

int64
ImsgBufferGetInt64(ImsgBuffer *buf)
{
	uint64		n;

	memcpy(&n, imsg_buffer_take(buf, 8), 8);
	return (int64) pg_ntoh64(n);
}

/* A pointer to the next 'len' bytes, inside the buffer (no copy). */
const char *
ImsgBufferGetBytes(ImsgBuffer *buf, uint32 len)
{
	return imsg_buffer_take(buf, len);
}

/*
 * A length-prefixed string: returns a pointer into the buffer and sets
 * *len.  The bytes are not NUL-terminated.  A length longer than what is
 * left is an error, checked before anything is consumed.
 */
const char *
ImsgBufferGetString(ImsgBuffer *buf, uint32 *len)
{
	uint32		n;
	uint32		start = buf->cursor;

	n = (uint32) ImsgBufferGetInt32(buf);
	if (n > buf->len - buf->cursor)
	{
		buf->cursor = start;
		imsg_buffer_overrun(buf, true, (uint64) n + 4);
	}
	*len = n;
	return imsg_buffer_take(buf, n);
}

uint32
ImsgBufferRemaining(const ImsgBuffer *buf)
{
	return buf->len - buf->cursor;
}

#ifndef IMSG_BUFFER_STANDALONE
/* ERROR unless the whole payload was read. */
void
ImsgBufferCheckEnd(const ImsgBuffer *buf)
{
	if (buf->cursor != buf->len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("imessages payload has trailing data"),
				 errdetail("%u of %u bytes were read.", buf->cursor, buf->len)));
}
#endif
