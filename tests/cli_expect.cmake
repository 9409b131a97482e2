# The CLI scripts' shared check (included by tests/cli_*.cmake run with cmake -P).
function(expect_match text regex what)
  if(NOT "${text}" MATCHES "${regex}")
    message(FATAL_ERROR "${what}: expected /${regex}/ in: ${text}")
  endif()
endfunction()
