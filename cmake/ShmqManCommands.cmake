# ShmqManCommands.cmake - cmake -DTOOL=path/to/shmq -DOUT=file.h2m -P ShmqManCommands.cmake
#
# Writes a help2man --include file with a COMMANDS section: `shmq help CMD` of every command
# that `shmq help` lists, each as it prints it (no-fill), so shmq(1) documents every option
# from the same text as `shmq CMD --help`.
execute_process(COMMAND ${TOOL} help OUTPUT_VARIABLE top RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${TOOL} help failed (${rc})")
endif()
# The command table: "  NAME     summary" lines after "Commands:", up to the first blank line.
string(REPLACE "\n" ";" lines "${top}")
set(names "")
set(in_table FALSE)
foreach(line IN LISTS lines)
  if(line STREQUAL "Commands:")
    set(in_table TRUE)
  elseif(in_table AND line STREQUAL "")
    break()
  elseif(in_table AND line MATCHES "^  ([a-z]+) ")
    list(APPEND names ${CMAKE_MATCH_1})
  endif()
endforeach()
if(NOT names)
  message(FATAL_ERROR "${TOOL} help lists no commands")
endif()
set(out "[COMMANDS]\nEach command's own help, as `shmq help COMMAND` and `shmq COMMAND --help` print it.\n")
foreach(cmd IN LISTS names)
  if(cmd STREQUAL "help")
    continue()
  endif()
  execute_process(COMMAND ${TOOL} help ${cmd} OUTPUT_VARIABLE text RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${TOOL} help ${cmd} failed (${rc})")
  endif()
  # roff: a backslash is \e; a line starting with . or ' would be a request: \& before it.
  string(REPLACE "\\" "\\e" text "${text}")
  string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" text "${text}")
  # at indent 0: the text is 80 columns wide already, as a terminal shows it
  string(APPEND out ".SS \"shmq ${cmd}\"\n.nf\n.in 0\n${text}.fi\n")
endforeach()
file(WRITE ${OUT} "${out}")
