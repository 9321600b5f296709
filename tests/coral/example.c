/* Coral's C example with its results checked, plus what Coral's C programs also do: wait with a
 * timeout, reuse of buffers across requests, a grown buffer, and the positive status that
 * inaccel_response_wait returns for a request that fails. */
#include <inaccel/coral.h>
#include <stdio.h>
#include <stdlib.h>

static int check(const char* what, const float* c, const float* a, const float* b, int size,
                 float sign) {
  int i;
  for (i = 0; i < size; i++) {
    if (c[i] != a[i] + sign * b[i]) {
      fprintf(stderr, "%s: c[%d] = %f, expected %f\n", what, i, c[i], a[i] + sign * b[i]);
      return 1;
    }
  }
  return 0;
}

/* Submits a request over a, b, c and size; returns inaccel_response_wait's result, or -1. */
static int call(const char* accelerator, float* a, float* b, float* c, int size, int timed) {
  int status;
  inaccel_response response;
  inaccel_request request = inaccel_request_create(accelerator);
  if (!request) {
    perror("inaccel_request_create");
    return -1;
  }

  if (inaccel_request_arg_array(request, size * sizeof(float), a, 0)) {
    perror("inaccel_request_arg_array");
    return -1;
  }
  if (inaccel_request_arg_array(request, size * sizeof(float), b, 1)) {
    perror("inaccel_request_arg_array");
    return -1;
  }
  if (inaccel_request_arg_array(request, size * sizeof(float), c, 2)) {
    perror("inaccel_request_arg_array");
    return -1;
  }
  if (inaccel_request_arg_scalar(request, sizeof(int), &size, 3)) {
    perror("inaccel_request_arg_scalar");
    return -1;
  }

  inaccel_request_fprint(stdout, request);
  fprintf(stdout, "\n");

  response = inaccel_response_create();
  if (!response) {
    perror("inaccel_response_create");
    return -1;
  }

  if (inaccel_submit(request, response)) {
    perror("inaccel_submit");
    return -1;
  }

  if (timed) {
    status = inaccel_response_wait_for(response, 60, 0);
  } else {
    status = inaccel_response_wait(response);
  }
  switch (status) {
    case -1:
      perror("inaccel_response_wait");
      break;
    case 0:
      break;
    default:
      inaccel_response_fprint(stderr, response);
      fprintf(stderr, "\n");
      break;
  }

  inaccel_response_release(response);

  inaccel_request_release(request);
  return status;
}

int main(void) {
  int size = 1024 * 1024;
  int i;

  float* a = (float*)inaccel_alloc(size * sizeof(float));
  float* b = (float*)inaccel_alloc(size * sizeof(float));
  float* c = (float*)inaccel_alloc(16);
  if (!a || !b || !c) {
    perror("inaccel_alloc");
    return EXIT_FAILURE;
  }
  /* A block grown to its full size, as programs that size their outputs late do. */
  c = (float*)inaccel_realloc(c, size * sizeof(float));
  if (!c) {
    perror("inaccel_realloc");
    return EXIT_FAILURE;
  }

  for (i = 0; i < size; i++) {
    a[i] = (float)(i % 10000);
    b[i] = (float)(i % 77) * 0.5f;
  }

  if (call("vector.addition", a, b, c, size, 0) != 0) return EXIT_FAILURE;
  if (check("vector.addition", c, a, b, size, 1)) return EXIT_FAILURE;

  if (call("vector.subtraction", a, b, c, size, 1) != 0) return EXIT_FAILURE;
  if (check("vector.subtraction", c, a, b, size, -1)) return EXIT_FAILURE;

  /* A request for an accelerator that is not installed completes with a positive status. */
  if (call("com.example.not.installed", a, b, c, size, 0) <= 0) {
    fprintf(stderr, "a request for a missing accelerator did not fail with a status\n");
    return EXIT_FAILURE;
  }

  inaccel_free(c);
  inaccel_free(b);
  inaccel_free(a);

  return EXIT_SUCCESS;
}
