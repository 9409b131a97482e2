# A command that must stop with an error: a non-zero exit status (not a crash: the tools exit
# with 1 on an error, 130 when interrupted) and REGEX in what it printed. CMD is the command
# line as a ;-list.
execute_process(COMMAND ${CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1)
  message(FATAL_ERROR "expected exit status 1 from ${CMD}, got '${rc}': ${out}${err}")
endif()
if(NOT "${out}${err}" MATCHES "${REGEX}")
  message(FATAL_ERROR "expected /${REGEX}/ from ${CMD}, got: ${out}${err}")
endif()
