# escape=`
FROM mcr.microsoft.com/windows/servercore
WORKDIR C:\app
COPY . C:\app\
RUN dir c:\ `
    && echo continued
RUN echo `` done
ENV P="C:\Program Files\App"
